// The software IOMMU (layer 2 of ../shared/DESIGN.md §4). See docs/architecture.md.
//
//   Memory/      PhysicalMemory — modelled physical memory: atomic 64-bit words, the frame allocator,
//                RAM regions (anonymous, memfd, caller memory) and bulk DMA bytes; thread-safe
//   Caches/      TranslationCache — the tagged set-associative cache used as IOTLB, SMMUv3 TLB,
//                nested TLB, paging-structure cache and device ATC (per-set seqlock)
//   Fabric/      what crosses the bus: RequesterID, PASID, DMARequest, Translation, FaultRecord,
//                ATS and PRI messages, and the TranslationAgent / DeviceEndpoint protocols
//   Devices/     PCIFunction — a PCI function with PASID, ATS (ATC) and PRI doing DMA via an IOMMU
//   PageTables/  X86PageTable   — x86-64 first-stage paging (VT-d first stage, the CPU)
