import IOASIDStructures
import Testing
@testable import IOASIDSoftIOMMU

let kib4: UInt64 = 0x1000
let mib2: UInt64 = 0x20_0000
let gib1: UInt64 = 0x4000_0000

/// A format under a property test: the table's configuration, the permissions to map with, and
/// an independent oracle for the rights a walk must report for a page mapped with them.
struct FormatUnderTest<Format: PageTableFormat> {
    var format: Format
    var permissions: [Format.Permissions]
    var rights: (Format.Permissions) -> AccessRights
    /// Where the 4 GiB (or smaller) window of IOVAs the test uses starts.
    var windowBase: UInt64
    /// Whether writes make pages dirty (A/D or dirty state enabled).
    var tracksDirty: Bool
}

/// The reference model: one entry per mapped 4 KiB page.
struct PageReferenceModel<Permissions: Hashable> {
    struct Page: Equatable {
        var physical: UInt64
        var permissions: Permissions
    }
    var pages: [UInt64: Page] = [:]
    /// Page numbers written since they were mapped or last reported dirty.
    var dirty: Set<UInt64> = []

    /// The mapped page numbers in `[iova, iova + size)`, visiting whichever is smaller: the range or the model.
    func mappedPages(_ iova: UInt64, _ size: UInt64) -> [UInt64] {
        let first = iova / kib4, end = (iova + size) / kib4
        if end - first > UInt64(pages.count) { return pages.keys.filter { $0 >= first && $0 < end } }
        return (first..<end).filter { pages[$0] != nil }
    }
    func anyMapped(_ iova: UInt64, _ size: UInt64) -> Bool { !mappedPages(iova, size).isEmpty }
    mutating func map(_ iova: UInt64, _ physical: UInt64, _ size: UInt64, _ permissions: Permissions) {
        for off in stride(from: UInt64(0), to: size, by: Int(kib4)) {
            pages[(iova + off) / kib4] = Page(physical: physical + off, permissions: permissions)
        }
    }
    mutating func unmap(_ iova: UInt64, _ size: UInt64) -> UInt64 {
        let mapped = mappedPages(iova, size)
        for page in mapped {
            pages.removeValue(forKey: page)
            dirty.remove(page)
        }
        return UInt64(mapped.count) * kib4
    }
    func page(_ iova: UInt64) -> Page? { pages[iova / kib4] }
}

/// Random map / unmap / access / dirty read-and-clear sequences against the reference model,
/// checking every translation, the permissions and dirty state, the enumeration, and that the
/// table frees every frame when emptied.
func checkAgainstReferenceModel<Format: PageTableFormat>(_ subject: FormatUnderTest<Format>, seed: UInt64,
                                                         steps: Int = 200) throws {
    var rng = SplitMix64(seed: seed)
    let memory = PhysicalMemory()
    let table = try PageTable(memory: memory, format: subject.format)
    let format = subject.format
    var model = PageReferenceModel<Format.Permissions>()
    let windowBase = subject.windowBase
    let window = min(4 * gib1, (UInt64(1) << UInt64(format.inputAddressBits)) - windowBase)
    var classes: [UInt64] = [kib4]
    if format.mayMapLeaf(atLevel: 2) && window >= 4 * mib2 { classes.append(mib2) }
    if format.mayMapLeaf(atLevel: 3) && window >= 2 * gib1 { classes.append(gib1) }
    var recent: [UInt64] = []
    var blocks: [(iova: UInt64, size: UInt64)] = []
    var maps = 0, unmaps = 0, superpages = 0, splits = 0, allowed = 0, denied = 0, dirtyReports = 0

    func randomAddress() -> UInt64 {
        if let r = recent.randomElement(using: &rng), Bool.random(using: &rng) {
            return r + UInt64.random(in: 0..<kib4, using: &rng)
        }
        return windowBase + UInt64.random(in: 0..<window, using: &rng)
    }

    for _ in 0..<steps {
        let roll = Int.random(in: 0..<100, using: &rng)
        if roll < 50 {
            // Map with a size class chosen to mix pages and blocks of every supported size.
            let cls = classes.contains(gib1) && roll < 2 ? gib1
                : classes.contains(mib2) && roll < 20 ? mib2 : kib4
            let count = cls == gib1 ? 1 : UInt64.random(in: 1...(cls == mib2 ? 3 : 24), using: &rng)
            var size = count * cls
            if cls == mib2 && Bool.random(using: &rng) { size += kib4 * UInt64.random(in: 1...8, using: &rng) }
            let iova = windowBase + UInt64.random(in: 0..<(window - size) / cls, using: &rng) * cls
            let physicalAlignment = Int.random(in: 0..<4, using: &rng) == 0 ? kib4 : cls
            let physical = 0x40_0000_0000 + UInt64.random(in: 0..<(1 << 40) / physicalAlignment, using: &rng) * physicalAlignment
            let permissions = subject.permissions.randomElement(using: &rng)!
            if model.anyMapped(iova, size) {
                #expect(throws: PageTableError.alreadyMapped) {
                    try table.map(iova: iova, physical: physical, size: size, permissions: permissions)
                }
            } else {
                try table.map(iova: iova, physical: physical, size: size, permissions: permissions)
                model.map(iova, physical, size, permissions)
                maps += 1
                if table.entries(for: iova).count < format.topLevel {
                    superpages += 1
                    blocks.append((iova, size))
                }
            }
            recent.append(iova)
            recent.append(iova + size - kib4)
        } else if (75..<80).contains(roll), let block = blocks.randomElement(using: &rng) {
            // Cut a few pages out of a range that was mapped with blocks.
            let pages = UInt64.random(in: 1...8, using: &rng)
            let start = block.iova + kib4 * UInt64.random(in: 0...(block.size / kib4 - pages), using: &rng)
            let wasBlock = table.entries(for: start).count < format.topLevel
            let removed = try table.unmap(iova: start, size: pages * kib4)
            #expect(removed == model.unmap(start, pages * kib4))
            if wasBlock && removed > 0 { splits += 1 }
            unmaps += 1
        } else if roll < 75 {
            // Unmap small ranges, ranges cutting into blocks, or whole gigabytes.
            var size: UInt64
            switch Int.random(in: 0..<10, using: &rng) {
            case 0: size = gib1
            case 1...4: size = kib4 * UInt64.random(in: 1...1024, using: &rng)
            default: size = kib4 * UInt64.random(in: 1...32, using: &rng)
            }
            size = min(size, window)
            let start: UInt64
            if let r = recent.randomElement(using: &rng), Bool.random(using: &rng), r >= windowBase + 64 * kib4 {
                // Near or inside a recent mapping, so that blocks are cut into.
                start = min(r - 64 * kib4 + kib4 * UInt64.random(in: 0..<640, using: &rng), windowBase + window - size)
            } else {
                start = windowBase + UInt64.random(in: 0...(window - size) / kib4, using: &rng) * kib4
            }
            let removed = try table.unmap(iova: start, size: size)
            #expect(removed == model.unmap(start, size))
            unmaps += 1
        } else if roll < 92 {
            // Accesses of every kind, with hardware updates.
            for _ in 0..<8 {
                let va = randomAddress()
                let kinds: [PageAccess.Kind] = [.read, .write, .execute]
                let access = PageAccess(kinds.randomElement(using: &rng)!, user: Bool.random(using: &rng))
                let got = table.translate(va, access: access)
                guard let page = model.page(va) else {
                    guard case .failure(let f) = got, f.reason == .translation else {
                        Issue.record("\(String(va, radix: 16)) \(access) should not be mapped: \(got)")
                        continue
                    }
                    continue
                }
                let expected = subject.rights(page.permissions)
                if expected.allows(access) {
                    allowed += 1
                    guard case .success(let t) = got else {
                        Issue.record("\(String(va, radix: 16)) \(access) on \(page.permissions) should succeed: \(got)")
                        continue
                    }
                    #expect(t.output == page.physical + va % kib4 && t.rights == expected)
                    if access.kind == .write && subject.tracksDirty {
                        let leaf = va & ~(t.pageSize - 1)
                        for p in stride(from: leaf, to: leaf + t.pageSize, by: Int(kib4)) { model.dirty.insert(p / kib4) }
                    }
                } else {
                    denied += 1
                    guard case .failure(let f) = got, case .permission = f.reason else {
                        Issue.record("\(String(va, radix: 16)) \(access) on \(page.permissions) should fault: \(got)")
                        continue
                    }
                }
            }
        } else {
            // Dirty read-and-clear of a random range (or the whole window).
            let size = Bool.random(using: &rng) ? window : kib4 * UInt64.random(in: 1...16384, using: &rng)
            let start = windowBase + UInt64.random(in: 0...(window - size) / kib4, using: &rng) * kib4
            let reported = try table.readAndClearDirty(iova: start, size: size)
            for r in reported {
                for p in stride(from: r.iova, to: r.iova + r.length, by: Int(kib4)) {
                    #expect(model.dirty.remove(p / kib4) != nil, "reported clean page \(String(p, radix: 16))")
                }
            }
            for key in model.dirty where key * kib4 >= start && key * kib4 < start + size {
                Issue.record("dirty page \(String(key * kib4, radix: 16)) not reported")
            }
            dirtyReports += reported.count
        }
        // Translations without updates equal the model (with an access the page allows, if any).
        let probes: [PageAccess] = [.read, .write, .execute, PageAccess(.execute, user: true)]
        for _ in 0..<16 {
            let va = randomAddress()
            let page = model.page(va)
            let expected = page.map { subject.rights($0.permissions) } ?? []
            let access = probes.first { expected.allows($0) } ?? .read
            let got = table.translate(va, access: access, updateAccessedDirty: false)
            if let page {
                if !expected.allows(access) {
                    guard case .failure(let f) = got, case .permission = f.reason else {
                        Issue.record("\(String(va, radix: 16)) allows nothing but \(got)")
                        continue
                    }
                    continue
                }
                guard case .success(let t) = got else {
                    Issue.record("\(String(va, radix: 16)) should be mapped: \(got)")
                    continue
                }
                #expect(t.output == page.physical + va % kib4, "iova \(String(va, radix: 16))")
                #expect(t.rights == expected)
            } else {
                guard case .failure(let f) = got, f.reason == .translation else {
                    Issue.record("\(String(va, radix: 16)) should not be mapped: \(got)")
                    continue
                }
            }
        }
    }

    // The whole table equals the model, page for page; dirty state too.
    var leafPages = 0, bad = 0
    table.forEachMapping { m in
        for off in stride(from: UInt64(0), to: m.size, by: Int(kib4)) {
            leafPages += 1
            guard let page = model.pages[(m.iova + off) / kib4],
                  page.physical == m.physical + off, page.permissions == m.permissions else { bad += 1; continue }
        }
    }
    #expect(bad == 0)
    #expect(leafPages == model.pages.count)
    var dirtyNow = Set<UInt64>()
    for r in try table.readAndClearDirty(iova: windowBase, size: window, clear: false) {
        for p in stride(from: r.iova, to: r.iova + r.length, by: Int(kib4)) { dirtyNow.insert(p / kib4) }
    }
    #expect(dirtyNow == model.dirty)
    // Tables unmap emptied are retired, not freed, until the owner reclaims them.
    #expect(table.tableFrameCount + table.retiredTableFrameCount == memory.allocatedFrameCount)
    #expect(maps > 0 && unmaps > 0 && allowed > 0 && denied > 0)
    if classes.count > 1 { #expect(superpages > 0 && splits > 0, "blocks mapped and split") }
    if subject.tracksDirty { #expect(dirtyReports > 0) }
    // Unmapping everything unlinks every table but the root; reclaiming frees them.
    try table.unmap(iova: windowBase, size: window)
    #expect(table.tableFrameCount == 1)
    let retired = table.retiredTableFrameCount
    #expect(memory.allocatedFrameCount == 1 + retired)
    #expect(table.reclaimFreedTables() == retired)
    #expect(table.retiredTableFrameCount == 0)
    #expect(memory.allocatedFrameCount == 1)
}

/// Guest memory for nested tests: the guest builds its stage-1 tables in its own
/// `PhysicalMemory` (guest-physical addresses); stage 2 maps guest-physical `[0, size)` to host
/// memory at `hostBase + gpa`, and `sync()` copies the guest's table frames there.
struct GuestRAM {
    let guest: PhysicalMemory
    let host: PhysicalMemory
    let hostBase: UInt64
    let size: UInt64

    /// Guest page-table frames come from [1 MiB, 2 MiB); guest RAM is `size` bytes.
    init(host: PhysicalMemory, hostBase: UInt64, size: UInt64 = 64 << 20) {
        self.guest = PhysicalMemory(allocatorBase: 0x10_0000, allocatorLimit: 0x20_0000)
        self.host = host
        self.hostBase = hostBase
        self.size = size
    }

    /// Copies every allocated guest frame to its host location.
    func sync() {
        for frame in stride(from: guest.allocatorBase, to: guest.allocatorLimit, by: Int(kib4)) where guest.isAllocated(frame) {
            for offset in stride(from: UInt64(0), to: kib4, by: 8) {
                host.write64(hostBase + frame + offset, guest.read64(frame + offset))
            }
        }
    }

    /// The host address of a guest-physical address.
    func host(_ gpa: UInt64) -> UInt64 { hostBase + gpa }
}
