// Memory the demo's VMs and VMM use: real pages of this process (host-physical = user address
// on the software IOMMU), and guest RAM with the guest's own page tables in it.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import IOASIDSoftIOMMU

/// Page-aligned, zero-filled memory of this process.
///
/// The mapping is never unmapped: when the buffer goes away its pages are given back
/// (`MADV_DONTNEED`) but the addresses stay reserved, so nothing else in the process is ever
/// placed where a DMA or a pin of the demo pointed.
final class DemoBuffer: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let length: Int

    init(pages: Int) {
        length = pages * 4096
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("ioasid demo: cannot map \(length) bytes")
        }
        base = p
    }

    deinit { _ = madvise(base, length, MADV_DONTNEED) }

    /// The user (= host-physical) address of the first byte.
    var address: UInt64 { UInt64(UInt(bitPattern: base)) }

    func bytes(at offset: Int, count: Int) -> [UInt8] {
        (0..<count).map { base.load(fromByteOffset: offset + $0, as: UInt8.self) }
    }

    func write64(at offset: Int, _ value: UInt64) { base.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
    func read64(at offset: Int) -> UInt64 { base.load(fromByteOffset: offset, as: UInt64.self) }
}

/// A guest's RAM: a buffer the VMM maps into an IOAS at guest-physical address `gpa`.
///
/// The guest builds its page tables with the software IOMMU's own formats in a model of its
/// memory whose frame allocator hands out the GPAs of pages `tablePage...`; ``publishTables()``
/// copies those pages into the RAM — the guest CPU's stores becoming visible to the IOMMU's
/// walker, with no invalidation implied.
final class GuestRAM: @unchecked Sendable {
    let buffer: DemoBuffer
    let gpa: UInt64
    let pages: Int
    let tablePage: Int
    /// The guest's view while it writes its tables.
    let tables: PhysicalMemory

    init(gpa: UInt64, pages: Int = 64, tablePage: Int = 32) {
        buffer = DemoBuffer(pages: pages)
        self.gpa = gpa
        self.pages = pages
        self.tablePage = tablePage
        tables = PhysicalMemory(allocatorBase: gpa + UInt64(tablePage) * 4096, allocatorLimit: gpa + UInt64(pages) * 4096)
    }

    var length: UInt64 { UInt64(pages) * 4096 }

    /// The GPA of page `i`.
    func page(_ i: Int) -> UInt64 { gpa + UInt64(i) * 4096 }

    /// Bytes of guest RAM at `address` (a GPA), as the guest would read them.
    func bytes(atGPA address: UInt64, count: Int) -> [UInt8] { buffer.bytes(at: Int(address - gpa), count: count) }

    /// Writes a 64-bit word of guest RAM directly (a structure the guest keeps outside its tables).
    func write64(atGPA address: UInt64, _ value: UInt64) { buffer.write64(at: Int(address - gpa), value) }

    /// A 4-level x86-64 first-stage table (the VT-d guest's IOMMU page table).
    func x86Table() throws -> PageTable<X86FirstStageFormat> {
        try PageTable(memory: tables, format: X86FirstStageFormat())
    }

    /// A 48-bit Arm stage-1 table (the SMMUv3 guest's).
    func armTable() throws -> ArmStage1PageTable {
        try ArmStage1PageTable(memory: tables, format: ArmStage1Format())
    }

    /// Copies the guest's table pages into its RAM.
    func publishTables() {
        var frame = tables.allocatorBase
        while frame < tables.allocatorLimit {
            let offset = Int(frame - gpa)
            for w in stride(from: 0, to: 4096, by: 8) { buffer.write64(at: offset + w, tables.read64(frame + UInt64(w))) }
            frame += 4096
        }
    }
}

/// A value in user memory, for driver data and invalidation arrays passed by address.
final class UserValue<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    let count: Int

    init(_ values: [T]) {
        count = values.count
        pointer = .allocate(capacity: max(1, values.count))
        pointer.initialize(from: values, count: values.count)
    }

    deinit {
        pointer.deinitialize(count: count)
        pointer.deallocate()
    }

    var address: UInt64 { UInt64(UInt(bitPattern: pointer)) }
}
