// Drivers under the core for the software IOMMU (layer 3 of docs/architecture.md): the core's
// IOMMUDriver / DeviceModel / PagingDomain protocols implemented on the modelled hardware.
//
//   VTd/     Intel VT-d scalable mode (host-allocated PASIDs: the host programs each PASID entry)
//   SMMUv3/  Arm SMMUv3 (guest-owned PASID table: the host binds the guest's CD table)
//   ModelledProcess  a process address space (x86-64 CPU page table in the IOMMU's memory) that
//            devices share through SVA; VTd/VTdSVADomain points a PASID entry at it
