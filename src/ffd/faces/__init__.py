"""Face-level tools: alignment, Grad-CAM explanations and face-region attribution."""
