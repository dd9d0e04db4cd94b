// Host PASID allocation with IOASID sets. See docs/architecture.md.
