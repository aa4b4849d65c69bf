"""Operations tooling beside the pipeline: not a stage, not imported by any stage."""
