import IOASIDStructures
// A randomized test of the ioctl dispatcher: random iommufd requests and IOMMU_TEST_CMD ops
// with random sizes, flags, IDs and bytes, on one IOMMUFile. Every call must return 0 (or a
// descriptor, for DMABUF_GET) or a negative errno, and never crash; after the file is closed
// no object and no Pages object may remain.
//
// Pointer fields are 0, never mapped (0x10, a kernel address), inside a PROT_NONE guard page,
// straddling the end of the scratch region into its guard, in a read-only region, or inside the
// scratch region this test owns. Every copy the framework makes through them is fault-safe, so a
// bad one is EFAULT, never a signal; lengths are bounded so that no write can go past a guard
// page into memory someone else may own. The ioctl's own argument pointer is bad now and then too
// (never mapped, PROT_NONE, read-only, straddling its page's end): EFAULT, exactly, when nothing
// of it can be read. Descriptor fields name a memfd of the test, the in-memory host's
// descriptors (never real), or nothing.
//
// IOASID_FUZZ_ITERATIONS (default 20000) and IOASID_FUZZ_SEED select the run; scripts/fuzz.sh
// runs long campaigns.

import CIOASIDSys
import Foundation
import IOASIDCore
import IOASIDLinuxABI
import Testing


/// Same lock as the core tests' `PinLock` (same per-process file): `PinRegistry.liveCount` is
/// process-wide, so comparing it needs every Pages-making test out of the way.
enum PinLock {
    private static let path = NSTemporaryDirectory() + "ioasid-pinlock-\(getpid())"
    static func shared<R>(_ body: () throws -> R) rethrows -> R { try with(LOCK_SH, body) }
    static func exclusive<R>(_ body: () throws -> R) rethrows -> R { try with(LOCK_EX, body) }
    private static func with<R>(_ op: Int32, _ body: () throws -> R) rethrows -> R {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        precondition(fd >= 0, "cannot open the pin lock file")
        while flock(fd, op) != 0 { precondition(errno == EINTR) }
        defer { flock(fd, LOCK_UN); close(fd) }
        return try body()
    }
}

struct DispatcherFuzzer {
    static let scratchPages = 64
    var rng: SplitMix64
    let file: IOMMUFile
    let host: MemoryHost
    let scratch = ArgumentPages(pages: DispatcherFuzzer.scratchPages, guardPage: true)
    let argument = ArgumentPages(pages: 1, guardPage: true)
    /// Pages the framework may read but not write, then a guard page.
    let readOnly = ArgumentPages(pages: 4, guardPage: true)
    let memfd: Int32
    var stats: [String: [Int: Int]] = [:]

    init(seed: UInt64) {
        rng = SplitMix64(seed: seed)
        (file, host) = makeFile()
        memfd = Int32(ioasid_sys_memfd(1 << 20, 1))
        precondition(memfd >= 0)
        scratch.zero()
        for offset in stride(from: 0, to: readOnly.pages * 4096, by: 8) { readOnly.base.storeBytes(of: rng.next(), toByteOffset: offset, as: UInt64.self) }
        precondition(mprotect(readOnly.base, readOnly.pages * 4096, PROT_READ) == 0)
    }

    var scratchEnd: UInt64 { scratch.address + UInt64(Self.scratchPages * 4096) }
    /// The end of the guard page after `pages`: no write may be aimed past it.
    func guardEnd(_ pages: ArgumentPages) -> UInt64 { pages.address + UInt64(pages.total) }

    /// A pointer and how many bytes follow it that the test owns (writes past them fault).
    mutating func pointer() -> (UInt64, UInt64) {
        switch Int.random(in: 0..<15, using: &rng) {
        case 0: return (0, 0)
        case 1: return (0x10, 0x8000)
        case 10: return (0xffff_8880_0000_0000 + UInt64.random(in: 0..<(1 << 30), using: &rng), 1 << 20) // kernel half
        case 11: // inside the guard page
            let p = scratchEnd + UInt64.random(in: 0..<4096, using: &rng)
            return (p, guardEnd(scratch) - p)
        case 12: // straddling the scratch region's end into its guard page
            let p = scratchEnd - UInt64.random(in: 1...256, using: &rng)
            return (p, guardEnd(scratch) - p)
        case 13, 14: // read-only
            let p = readOnly.address + UInt64.random(in: 0..<UInt64(readOnly.pages * 4096), using: &rng)
            return (p, guardEnd(readOnly) - p)
        case 2, 3:
            let page = UInt64.random(in: 0..<UInt64(Self.scratchPages), using: &rng)
            return (scratch.address + page * 4096, scratchEnd - scratch.address - page * 4096)
        default:
            let off = UInt64.random(in: 0..<UInt64(Self.scratchPages * 4096), using: &rng) & (rng.chance(70) ? ~UInt64(7) : ~UInt64(0))
            return (scratch.address + off, scratchEnd - scratch.address - off)
        }
    }

    mutating func id() -> UInt64 {
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: return 0
        case 1: return UInt64(rng.next() & 0xffff_ffff)
        case 2: return UInt64(host.descriptors.randomElement(using: &rng) ?? 100_000)
        default: return UInt64.random(in: 1...14, using: &rng)
        }
    }

    mutating func number64() -> UInt64 {
        switch Int.random(in: 0..<12, using: &rng) {
        case 0: return 0
        case 1: return .max
        case 2: return rng.next()
        case 3: return UInt64.random(in: 0..<(1 << 20), using: &rng)
        case 4: return (1 << 24) + UInt64.random(in: 0..<512, using: &rng) * 2048
        case 5: return UInt64.random(in: 1...16, using: &rng) * 4096
        case 6: return UInt64.random(in: 1...8, using: &rng) * 2048
        case 7: return 1 << UInt64.random(in: 0..<64, using: &rng)
        default: return UInt64.random(in: 0..<256, using: &rng) * 4096 + (rng.chance(20) ? UInt64.random(in: 1..<4096, using: &rng) : 0)
        }
    }

    mutating func small() -> UInt64 {
        switch Int.random(in: 0..<8, using: &rng) {
        case 0: return 0
        case 1: return UInt64(rng.next() & 0xffff_ffff)
        case 2: return UInt64(rng.pick([8, 12, 16, 24, 0xdead, 0xdead_beef, 0xbeef_beef, 0xfeed_beef] as [UInt32]))
        default: return UInt64.random(in: 0...64, using: &rng)
        }
    }

    mutating func flags() -> UInt64 {
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: return UInt64(rng.next() & 0xffff_ffff)
        case 1, 2, 3: return 0
        case 4, 5: return 6 | (rng.chance(50) ? 1 : 0) // IOAS map: readable | writeable [| fixed]
        default: return UInt64.random(in: 0..<16, using: &rng) | (rng.chance(5) ? 1 << 16 : 0)
        }
    }

    mutating func descriptor() -> UInt64 {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: return UInt64(UInt32(bitPattern: -1))
        case 1: return UInt64(host.descriptors.randomElement(using: &rng) ?? 100_000)
        default: return UInt64(UInt32(bitPattern: memfd))
        }
    }

    static let pointerNames: Set<String> = ["user_va", "allowed_iovas", "data_uptr", "data", "uptr"]
    static let descriptorNames: Set<String> = ["fd", "dmabuf_fd"]

    /// Fills the argument page for `row` and returns the user size to pass.
    mutating func fill(_ row: IoctlRow) -> (size: Int, pointers: [String: (UInt64, UInt64)]) {
        let base = argument.base
        // Random bytes everywhere first (the tail too), then the fields.
        argument.zero()
        if rng.chance(50) {
            for i in stride(from: 0, to: row.size, by: 8) { base.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self) }
        }
        var fields = row.type.layoutFields
        if row.request == IOCTL.IOMMU_TEST_CMD {
            let op = rng.chance(97) ? UInt32.random(in: 1...23, using: &rng) : UInt32(rng.next() & 0xff)
            let members = iommu_test_cmd.unionMembers.map(\.name)
            let member = op >= 1 && op <= 23 ? testOpMember[Int(op)] : "add_reserved"
            fields = fields.filter { f in
                !members.contains(f.name) && (!f.name.contains(".") || f.name.hasPrefix(member + "."))
            }
            base.storeBytes(of: op, toByteOffset: 4, as: UInt32.self)
            fields.removeAll { $0.name == "op" }
        }
        var pointers: [String: (UInt64, UInt64)] = [:]
        for f in fields where f.size > 0 && f.offset > 0 {
            let name = String(f.name.split(separator: ".").last!)
            let value: UInt64
            if Self.pointerNames.contains(name) {
                let p = pointer()
                pointers[name] = p
                value = p.0
            } else if Self.descriptorNames.contains(name) {
                value = descriptor()
            } else if name.hasPrefix("out_") {
                value = rng.next()
            } else if name.hasPrefix("__reserved") || name.hasPrefix("__pad") {
                value = rng.chance(5) ? rng.next() : 0
            } else if name == "id" || name.hasSuffix("_id") {
                value = id()
            } else if name.hasSuffix("flags") {
                value = flags()
            } else if name == "op" {
                value = UInt64.random(in: 0...3, using: &rng)
            } else if f.size == 8 {
                value = number64()
            } else {
                value = small()
            }
            store(value, at: f.offset, size: f.size)
        }
        let size: Int
        switch Int.random(in: 0..<20, using: &rng) {
        case 0: size = Int.random(in: 0..<row.minimumSize, using: &rng)
        case 1: size = row.minimumSize
        case 2: size = row.size + Int.random(in: 1...64, using: &rng)
            if rng.chance(50) { base.storeBytes(of: 1 as UInt8, toByteOffset: Int.random(in: row.size..<size, using: &rng), as: UInt8.self) }
        case 3: size = Int.random(in: 0...300, using: &rng)
        default: size = row.size
        }
        base.storeBytes(of: UInt32(size), as: UInt32.self)
        return (size, pointers)
    }

    func store(_ value: UInt64, at offset: Int, size: Int) {
        let base = argument.base
        switch size {
        case 1: base.storeBytes(of: UInt8(truncatingIfNeeded: value), toByteOffset: offset, as: UInt8.self)
        case 2: base.storeBytes(of: UInt16(truncatingIfNeeded: value), toByteOffset: offset, as: UInt16.self)
        case 4: base.storeBytes(of: UInt32(truncatingIfNeeded: value), toByteOffset: offset, as: UInt32.self)
        case 8: base.storeBytes(of: value, toByteOffset: offset, as: UInt64.self)
        default: for i in 0..<size { base.storeBytes(of: UInt8(truncatingIfNeeded: value >> UInt64(8 * (i % 8))), toByteOffset: offset + i, as: UInt8.self) }
        }
    }

    func load64(_ row: IoctlRow, _ name: String) -> UInt64 {
        guard let f = row.type.layoutField(named: name) else { return 0 }
        switch f.size {
        case 4: return UInt64(argument.base.load(fromByteOffset: f.offset, as: UInt32.self))
        case 8: return argument.base.load(fromByteOffset: f.offset, as: UInt64.self)
        default: return 0
        }
    }

    /// `value` bounded by `limit` (kept as is when within it).
    mutating func bound(_ row: IoctlRow, _ name: String, _ limit: UInt64) {
        guard let f = row.type.layoutField(named: name) else { return }
        let v = load64(row, name)
        if v > limit { store(limit == 0 ? 0 : UInt64.random(in: 0...limit, using: &rng), at: f.offset, size: f.size) }
    }

    /// The rules that keep the framework's writes and loops inside what the test owns.
    mutating func constrain(_ row: IoctlRow, pointers: [String: (UInt64, UInt64)]) {
        func room(_ name: String) -> UInt64 { pointers[name]?.1 ?? 0 }
        switch row.request {
        case IOCTL.IOMMU_IOAS_MAP:
            // The mapping's host pages are user_va..user_va+length: keep them ours (or unmapped).
            bound(row, "length", room("user_va"))
        case IOCTL.IOMMU_GET_HW_INFO:
            bound(row, "data_len", min(room("data_uptr"), 8192))
        case IOCTL.IOMMU_IOAS_ALLOW_IOVAS:
            bound(row, "num_iovas", 64)
        case IOCTL.IOMMU_HWPT_INVALIDATE:
            bound(row, "entry_num", 64)
        case IOCTL.IOMMU_HWPT_GET_DIRTY_BITMAP:
            // The bitmap byte of unit u is data + u/8.
            let page = load64(row, "page_size")
            if page == 0 || load64(row, "length") / page / 8 >= room("data") {
                let (l, o) = page.multipliedReportingOverflow(by: UInt64.random(in: 1...64, using: &rng))
                store(o ? 0 : l, at: row.type.layoutField(named: "length")!.offset, size: 8)
            }
        case IOCTL.IOMMU_TEST_CMD:
            let op = argument.base.load(fromByteOffset: 4, as: UInt32.self)
            switch op {
            case UAPI.IOMMU_TEST_OP_MD_CHECK_REFS: bound(row, "check_refs.length", 1 << 20)
            case UAPI.IOMMU_TEST_OP_MD_CHECK_MAP: bound(row, "check_map.length", 1 << 20)
            case UAPI.IOMMU_TEST_OP_DIRTY:
                let page = load64(row, "dirty.page_size")
                if page != 0, load64(row, "dirty.length") / page > 1 << 16 {
                    store(page &* 64, at: row.type.layoutField(named: "dirty.length")!.offset, size: 8)
                }
            default: break
            }
        default: break
        }
    }

    /// `row`'s request with a bad argument pointer: never mapped or PROT_NONE (EFAULT, nothing
    /// can be read), read-only (the request may run; its answer cannot be written back), or the
    /// filled struct moved to straddle its page's end (the part in the guard page cannot be read).
    mutating func badArgument(_ row: IoctlRow, size: Int) -> String? {
        let pointer: UnsafeMutableRawPointer?
        var unreadable = false
        switch Int.random(in: 0..<4, using: &rng) {
        case 0:
            pointer = UnsafeMutableRawPointer(bitPattern: rng.chance(50) ? UInt(0x10) : UInt(0xffff_8880_0000_0000))
            unreadable = true
        case 1:
            pointer = argument.base + 4096 + Int.random(in: 0..<4096, using: &rng)
            unreadable = true
        case 2:
            pointer = readOnly.base + Int.random(in: 0..<(readOnly.pages * 4096 - 512), using: &rng) & ~7
        default:
            let kept = Int.random(in: 1...max(1, min(size, row.size) - 1), using: &rng)
            let moved = argument.base + 4096 - kept
            moved.copyMemory(from: UnsafeRawPointer(argument.base), byteCount: kept)
            pointer = moved
            unreadable = kept < 4 // not even the size field
        }
        let r = file.ioctl(request: row.request, argument: pointer)
        stats[unreadable ? "(unreadable argument)" : "(read-only or straddling argument)", default: [:]][r > 0 ? 1 : r, default: 0] += 1
        if unreadable { return r == -14 ? nil : "\(row.name) with an unreadable argument returned \(r), not -EFAULT" }
        if row.request == IOCTL.IOMMU_TEST_CMD && r > 0 { close(Int32(r)); return nil }
        return r == 0 || (r < 0 && r >= -4095) ? nil : "\(row.name) with a bad argument returned \(r)"
    }

    /// The union member of each test op (1-based).
    let testOpMember = ["", "add_reserved", "mock_domain", "check_map", "check_refs", "create_access", "destroy_access_pages",
                        "access_pages", "access_rw", "memory_limit", "mock_domain_replace", "access_replace_ioas",
                        "mock_domain_flags", "dirty", "check_iotlb", "trigger_iopf", "check_dev_cache", "trigger_vevent",
                        "pasid_attach", "pasid_replace", "pasid_detach", "pasid_check", "dmabuf_get", "dmabuf_revoke"]

    /// One random step; returns a description of a bad outcome, or nil.
    mutating func step() -> String? {
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<3:
            // A queue file: read, write a response, or close it.
            guard let fd = host.descriptors.randomElement(using: &rng), let f = host.file(for: fd) else { return nil }
            let (p, room) = pointer()
            let count = Int(min(room, UInt64(rng.pick([0, 8, 12, 32, 48, 64, 96, 4096]))))
            let buffer = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: UInt(p)), count: p == 0 ? 0 : count)
            let r: Int
            switch Int.random(in: 0..<3, using: &rng) {
            case 0: r = p < 0x10000 ? 0 : f.read(into: buffer)
            case 1: r = p < 0x10000 ? 0 : f.write(from: UnsafeRawBufferPointer(buffer))
            default: host.close(fd); r = 0
            }
            return r >= 0 || r >= -4095 ? nil : "queue file I/O returned \(r)"
        case 3..<5:
            // Not a request of this file.
            let req = IOCTL._IO(UInt(rng.pick([0x3b, 0x54, 0x00] as [Int])), UInt.random(in: 0x95...0xff, using: &rng))
            if IOCTL.name(of: req) != nil { return nil }
            argument.zero()
            if IOASIDUAPI.allRequests.contains(where: { $0.request == req }) {
                // The IOASID layer's requests: random small fields, a plausible size.
                for off in stride(from: 4, to: 32, by: 4) {
                    argument.base.storeBytes(of: UInt32(rng.pick([0, 1, 2, 3, 64, 0xffff_ffff] as [Int])), toByteOffset: off, as: UInt32.self)
                }
                argument.setSize(rng.pick([0, 8, 24, 32, 40]))
                let r = file.ioctl(request: req, argument: argument.base)
                return r == 0 || (-4095 ... -1).contains(r) ? nil : "IOASID request \(String(req, radix: 16)) returned \(r)"
            }
            let r = file.ioctl(request: req, argument: argument.base)
            return r == -25 ? nil : "unknown request \(String(req, radix: 16)) returned \(r)"
        default:
            let row = rng.chance(35) ? iommufdRows.last! : rng.pick(iommufdRows)
            let (size, pointers) = fill(row)
            constrain(row, pointers: pointers)
            let op = argument.base.load(fromByteOffset: 4, as: UInt32.self)
            if rng.chance(4) { return badArgument(row, size: size) }
            let r = file.ioctl(request: row.request, argument: argument.base)
            let key = row.request == IOCTL.IOMMU_TEST_CMD ? "TEST_OP_\(op)" : row.name
            stats[key, default: [:]][r > 0 ? 1 : r, default: 0] += 1
            if row.request == IOCTL.IOMMU_TEST_CMD, op == UAPI.IOMMU_TEST_OP_DMABUF_GET, r > 0 {
                close(Int32(r)) // a real memfd the test driver made for us
                return nil
            }
            return r == 0 || (r < 0 && r >= -4095) ? nil : "\(key) returned \(r)"
        }
    }
}

@Suite("Dispatcher fuzz")
struct DispatcherFuzzTests {
    static let iterations = Int(ProcessInfo.processInfo.environment["IOASID_FUZZ_ITERATIONS"] ?? "") ?? 20_000
    static let seed = UInt64(ProcessInfo.processInfo.environment["IOASID_FUZZ_SEED"] ?? "") ?? 0x10A5_1D00

    @Test func randomRequestsReturnZeroOrANegativeErrno() {
        PinLock.exclusive {
            let liveBefore = PinRegistry.shared.liveCount
            #expect(ioasid_sys_uaccess_install() == 0, "the fault-safe copies' handler")
            var fuzz = DispatcherFuzzer(seed: Self.seed)
            defer { close(fuzz.memfd) }
            let start = Date()
            var failures = 0
            for i in 0..<Self.iterations {
                if let bad = fuzz.step() {
                    failures += 1
                    if failures <= 20 { Issue.record("iteration \(i) (seed \(Self.seed)): \(bad)") }
                }
            }
            let successes = fuzz.stats.values.reduce(0) { $0 + ($1[0] ?? 0) }
            print("fuzz: \(Self.iterations) iterations, seed \(Self.seed), \(successes) successful ioctls, \(fuzz.file.context.objects.count) objects live, \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
            for (k, v) in fuzz.stats.sorted(by: { $0.key < $1.key }) {
                print("  \(k): " + v.sorted { $0.key > $1.key }.map { "\($0.key == 1 ? "fd" : String($0.key)):\($0.value)" }.joined(separator: " "))
            }
            #expect(successes > Self.iterations / 20, "the fuzzer must reach past argument checking")
            // The last close: queue files first (they hold the context), then the file.
            fuzz.host.closeAll()
            fuzz.file.release()
            #expect(fuzz.file.context.objects.isEmpty)
            #expect(fuzz.file.context.chargedPages(.perUser) == 0 && fuzz.file.context.chargedPages(.perProcess) == 0)
            for p in 0..<DispatcherFuzzer.scratchPages {
                let a = fuzz.scratch.address + UInt64(p * 4096)
                #expect(PinRegistry.shared.pinCount(address: a, identity: .address(a)) == 0, "scratch page \(p) still pinned")
            }
            #expect(PinRegistry.shared.liveCount == liveBefore, "no Pages object outlives the context")
        }
    }
}

extension SplitMix64 {
    mutating func chance(_ percent: Int) -> Bool { Int.random(in: 0..<100, using: &self) < percent }
    mutating func pick<T>(_ xs: [T]) -> T { xs.randomElement(using: &self)! }
}
