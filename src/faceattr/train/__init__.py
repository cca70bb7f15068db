"""Training: losses, the device-side data loader and augmentation, the loop, and the two trainings."""
