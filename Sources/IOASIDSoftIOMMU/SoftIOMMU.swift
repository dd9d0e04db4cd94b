// The software IOMMU (layer 2 of docs/architecture.md). See docs/architecture.md.
//
//   Memory/      PhysicalMemory — modelled physical memory: atomic 64-bit words, the frame allocator,
//                RAM regions (anonymous, memfd, caller memory) and bulk DMA bytes; thread-safe
//   Caches/      TranslationCache — the tagged set-associative cache used as IOTLB, SMMUv3 TLB,
//                nested TLB, paging-structure cache and device ATC (per-set seqlock)
//   Fabric/      what crosses the bus: RequesterID, PASID, DMARequest, Translation, FaultRecord,
//                ATS and PRI messages, and the TranslationAgent / DeviceEndpoint protocols
//   Devices/     PCIFunction — a PCI function with PASID, ATS (ATC) and PRI doing DMA via an IOMMU
//   PageTables/  one radix engine, many formats (4 KiB granule, 512 entries per table):
//     PageTableFormat.swift — the shared vocabulary (PageAccess, AccessRights, PageTableFault,
//                             PageTranslation, PageTableError) and the PageTableFormat protocol:
//                             what the bits of an entry mean, per level, and the walker's rules
//     PageTable.swift       — PageTable<Format>: map (largest aligned pages/blocks), unmap (splits
//                             large leaves), enumeration, dirty read-and-clear, table-frame count;
//                             writers under one lock, walks lock-free, emptied tables retired until
//                             the owner reclaims their epoch (after its invalidation completed)
//     PageTableWalk.swift   — the hardware walk for every format, through a port (direct memory,
//                             or stage 2); hardware A/D/AF/dirty updates only on success, each a
//                             compare-exchange from the value read (the walk restarts if it changed)
//     X86PageTable.swift    — X86FirstStageFormat (x86-64 4/5-level; VT-d first stage, the CPU)
//                             and X86PageTable, its x86-typed face
//     VTdSecondStage.swift  — VTdSecondStageFormat (AGAW 39/48/57, SSADE, SSEE)
//     ArmVMSAv8.swift       — what Arm stage 1 and stage 2 share (descriptor types, OA, SH, AF, DBM)
//     ArmStage1.swift       — ArmStage1Format (TxSZ, APTable/XNTable, HA/HD)
//     ArmStage2.swift       — ArmStage2Format (T0SZ/SL0, S2AP, XN[1:0], HA/HD)
//     NestedWalk.swift      — NestedPageTable<Stage1, Stage2>: the two-dimensional walk
//
//   VTd/         Intel VT-d in scalable mode:
//     VTdCapabilities.swift — CAP/ECAP registers and VTdConfiguration (what a unit supports)
//     VTdTables.swift       — root, scalable-mode context, PASID directory and PASID entries
//     VTdInvalidation.swift — invalidation-queue descriptors (typed ⇄ 256-bit)
//     VTdFaults.swift       — fault reason codes, fault recording registers, page request descriptors
//     VTdUnit*.swift        — VTdUnit, the remapping hardware: registers, context/PASID caches,
//                             IOTLBs, translation by PGTT (nested: the 2D walk), ATS, the
//                             invalidation queue, fault recording, the page request queue
//     VTdSoftware.swift     — the host side: invalidation queue, page request queue, host tables
