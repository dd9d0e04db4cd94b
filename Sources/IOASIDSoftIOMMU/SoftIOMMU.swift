// The software IOMMU (layer 2 of ../shared/DESIGN.md §4). See docs/architecture.md.
//
//   Memory/      PhysicalMemory — modelled physical memory and its frame allocator
//   PageTables/  X86PageTable   — x86-64 first-stage paging (VT-d first stage, the CPU)
