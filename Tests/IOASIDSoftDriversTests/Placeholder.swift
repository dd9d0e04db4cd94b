// Tests of the software IOMMU drivers under the core live in this target.
