"""Tools outside the live path: the demo, fitting the role classifier, audio helpers."""
