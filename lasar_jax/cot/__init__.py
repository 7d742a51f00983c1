"""CoT rationales of the training samples and their hidden-state anchors (METHOD.md section 4)."""
