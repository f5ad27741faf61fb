"""One module per stage: ``run(ctx: StageContext) -> dict`` (extra manifest fields)."""
