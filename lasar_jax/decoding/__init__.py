"""Trie-constrained SID decoding after a prefilled cache (METHOD.md sections 4 and 6).

`beam_search.beam_search(...) -> BeamResult`: the top-W valid SIDs of each row, for ranking;
`sampling.sample_sids(...) -> SampleResult`: one valid SID per row at a temperature, for GRPO.
"""
