// The software IOMMU (layer 2). See docs/architecture.md.
