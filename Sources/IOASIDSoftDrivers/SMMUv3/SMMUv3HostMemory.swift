// Host-physical memory as the SMMUv3 driver lays it out in the SMMU's PhysicalMemory.
//
//   below 2^47                 user pages, at their own addresses: the pinned pages of the
//                              core's IOAS areas are attached as RAM while a domain maps them,
//                              so DMA lands in the user's buffer (host PA = user address)
//   [2^47, 2^47 + 1 GiB)       the frame allocator's window: translation table frames
//   [2^47 + 1 GiB, + 64 MiB)   the structure arena: stream table, CD tables, queues (blocks of
//                              2^n pages, naturally aligned, from a buddy allocator)
//
// Everything is below 2^48, the SMMU's output address size.

import IOASIDSoftIOMMU
import IOASIDStructures

/// The user pages currently attached as RAM: a reference count per 4 KiB page and the RAM
/// regions covering the referenced pages (regions never overlap; a page is in exactly one
/// region while referenced). Not thread-safe: the driver guards it.
struct AttachedUserMemory {
    let memory: PhysicalMemory
    /// Page number → references.
    var counts: [UInt64: Int] = [:]
    /// Region base → region.
    var regions: [UInt64: RAMRegion] = [:]

    init(memory: PhysicalMemory) { self.memory = memory }

    /// References the pages of `[address, address + length)` (page-aligned host addresses of
    /// pinned user memory), attaching those not yet attached.
    mutating func retain(_ address: UInt64, _ length: UInt64) {
        var runStart: UInt64? = nil
        var page = address >> 12
        let end = (address + length + 0xFFF) >> 12
        while page < end {
            let c = counts[page, default: 0]
            counts[page] = c + 1
            if c == 0 {
                if runStart == nil { runStart = page }
            } else if let s = runStart {
                attach(s, page)
                runStart = nil
            }
            page += 1
        }
        if let s = runStart { attach(s, end) }
    }

    /// Drops one reference of each page of `[address, address + length)`; detaches pages no
    /// longer referenced (re-attaching the still referenced rest of their regions).
    mutating func release(_ address: UInt64, _ length: UInt64) {
        var touched: Set<UInt64> = []
        var page = address >> 12
        let end = (address + length + 0xFFF) >> 12
        while page < end {
            if let c = counts[page] {
                if c <= 1 {
                    counts.removeValue(forKey: page)
                    if let r = region(containing: page << 12) { touched.insert(r.base) }
                } else {
                    counts[page] = c - 1
                }
            }
            page += 1
        }
        for base in touched {
            guard let r = regions.removeValue(forKey: base) else { continue }
            try? memory.detachRAM(r)
            var runStart: UInt64? = nil
            var p = r.base >> 12
            let last = (r.last >> 12) + 1
            while p < last {
                if counts[p] != nil {
                    if runStart == nil { runStart = p }
                } else if let s = runStart {
                    attach(s, p)
                    runStart = nil
                }
                p += 1
            }
            if let s = runStart { attach(s, last) }
        }
    }

    private func region(containing address: UInt64) -> RAMRegion? {
        regions.values.first { $0.contains(address) }
    }

    /// Attaches pages `[first, end)` (page numbers) as one region of caller memory.
    private mutating func attach(_ first: UInt64, _ end: UInt64) {
        let base = first << 12, length = (end - first) << 12
        let buffer = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: UInt(base)), count: Int(length))
        if let r = try? memory.attachRAM(at: base, external: buffer) { regions[base] = r }
    }
}

/// A buddy allocator of naturally aligned blocks of 2^n pages in a RAM region: the driver's
/// structures that must be physically contiguous (stream table, linear CD tables, queues).
/// Not thread-safe: the driver guards it.
struct StructureArena {
    let base: UInt64
    let maxOrder: Int
    /// Free block addresses per order (block size 4 KiB << order).
    var free: [[UInt64]]

    init(base: UInt64, length: UInt64) {
        precondition(length.nonzeroBitCount == 1 && length >= 4096 && base % length == 0)
        self.base = base
        maxOrder = length.trailingZeroBitCount - 12
        free = Array(repeating: [], count: maxOrder + 1)
        free[maxOrder] = [base]
    }

    /// The order of a block of at least `bytes`.
    static func order(_ bytes: UInt64) -> Int {
        let pages = max(1, (bytes + 4095) / 4096)
        return 64 - (pages - 1).leadingZeroBitCount
    }

    /// A block of at least `bytes`, aligned to its size; nil when the arena is exhausted.
    mutating func allocate(_ bytes: UInt64) -> UInt64? {
        let want = Self.order(bytes)
        guard want <= maxOrder else { return nil }
        var o = want
        while o <= maxOrder && free[o].isEmpty { o += 1 }
        guard o <= maxOrder else { return nil }
        let block = free[o].removeLast()
        while o > want {
            o -= 1
            free[o].append(block + (UInt64(4096) << UInt64(o)))
        }
        return block
    }

    /// Returns a block of `bytes` at `address`.
    mutating func release(_ address: UInt64, _ bytes: UInt64) {
        var o = Self.order(bytes)
        var block = address
        while o < maxOrder {
            let buddy = base + ((block - base) ^ (UInt64(4096) << UInt64(o)))
            guard let i = free[o].firstIndex(of: buddy) else { break }
            free[o].remove(at: i)
            block = min(block, buddy)
            o += 1
        }
        free[o].append(block)
    }
}
