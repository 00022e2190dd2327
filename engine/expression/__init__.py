"""Expression: speech -> 52 ARKit blendshape weights and head motion, per subject or generic."""
