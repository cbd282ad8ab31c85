"""Chapter 8: distillation into few-step students, against exact flow maps."""
