import IOASIDProcessMemory
import Foundation
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import IOASIDStructures
import Testing

/// Each driver's reserved IOVA (the VT-d interrupt window, the SMMUv3 software MSI window)
/// enters an IOAS with the device's RID attachment and leaves with it, as the kernel's
/// `iopt_table_enforce_dev_resv_regions` does.
@Suite struct ReservedRegionTests {
    enum Kind: String, CaseIterable { case vtd, smmuv3 }

    private func setup(_ kind: Kind) throws -> (SoftMachine, any DMADevice, IOVARange) {
        let machine = SoftMachine(vtdDelivery: .manual)
        switch kind {
        case .vtd: return (machine, try machine.addVTdDevice(), IOVARange(start: 0xfee0_0000, last: 0xfeef_ffff))
        case .smmuv3: return (machine, try machine.addSMMUv3Device(), IOVARange(start: 0x0800_0000, last: 0x080f_ffff))
        }
    }

    private func buffer(_ length: Int) -> UInt64 {
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        return UInt64(UInt(bitPattern: p))
    }

    @Test(arguments: Kind.allCases) func windowIsReservedWhileTheRIDIsAttached(_ kind: Kind) throws {
        try pinsShared {
            let (machine, model, window) = try setup(kind)
            defer { withExtendedLifetime(machine) {} }  // the SMMUv3 master does not own its driver
            #expect(model.reservedRegions == [window])
            let context = Context(memory: ProcessMemory.shared)
            let device = try context.bind(model)
            let ioas = try context.allocateIOAS()
            let before = try context.iovaRanges(ioas).ranges
            #expect(before.contains { $0.contains(window) })

            _ = try context.attach(device, to: ioas.object)
            let during = try context.iovaRanges(ioas).ranges
            #expect(!during.contains { $0.overlaps(window) })
            #expect(during.contains { $0.last == window.start - 1 })
            #expect(during.contains { $0.start == window.last + 1 })
            let memory = buffer(0x2000)
            expectVTdErrno(EINVAL) {
                try context.map(ioas, source: .user(address: memory), length: 0x1000, iova: window.start, access: .readWrite)
            }
            expectVTdErrno(EINVAL) {
                try context.map(ioas, source: .user(address: memory), length: 0x2000, iova: window.start - 0x1000, access: .readWrite)
            }
            // Allocated IOVA never lands in the window: fill right below it.
            let below = try context.map(ioas, source: .user(address: memory), length: 0x1000, iova: window.start - 0x1000, access: .readWrite)
            #expect(below == window.start - 0x1000)

            try context.detach(device)
            #expect(try context.iovaRanges(ioas).ranges.contains { $0.contains(window) })
            _ = try context.map(ioas, source: .user(address: memory), length: 0x1000, iova: window.start, access: .readWrite)
        }
    }

    @Test(arguments: Kind.allCases) func attachOverAMappingInTheWindowIsAddressInUse(_ kind: Kind) throws {
        try pinsShared {
            let (machine, model, window) = try setup(kind)
            defer { withExtendedLifetime(machine) {} }  // the SMMUv3 master does not own its driver
            let context = Context(memory: ProcessMemory.shared)
            let device = try context.bind(model)
            let ioas = try context.allocateIOAS()
            let memory = buffer(0x1000)
            _ = try context.map(ioas, source: .user(address: memory), length: 0x1000, iova: window.start + 0x1000, access: .readWrite)
            expectVTdErrno(EADDRINUSE) { try context.attach(device, to: ioas.object) }
            #expect(try context.attachedHWPT(device) == nil)
            // Nothing was left reserved by the failed attach.
            _ = try context.unmap(ioas, iova: window.start + 0x1000, length: 0x1000)
            #expect(try context.iovaRanges(ioas).ranges.contains { $0.contains(window) })
            // An allowed span over the window is refused the same way.
            try context.allowIOVAs(ioas, [window])
            expectVTdErrno(EADDRINUSE) { try context.attach(device, to: ioas.object) }
            try context.allowIOVAs(ioas, [])
            _ = try context.attach(device, to: ioas.object)
        }
    }

    @Test(arguments: Kind.allCases) func replaceMovesTheWindowToTheNewIOAS(_ kind: Kind) throws {
        try pinsShared {
            let (machine, model, window) = try setup(kind)
            defer { withExtendedLifetime(machine) {} }  // the SMMUv3 master does not own its driver
            let context = Context(memory: ProcessMemory.shared)
            let device = try context.bind(model)
            let first = try context.allocateIOAS(), second = try context.allocateIOAS()
            _ = try context.attach(device, to: first.object)
            _ = try context.replace(device, with: second.object)
            #expect(try context.iovaRanges(first).ranges.contains { $0.contains(window) })
            #expect(!(try context.iovaRanges(second).ranges.contains { $0.overlaps(window) }))
            // A replace that fails (a mapping in the window of the target) keeps the old state.
            let third = try context.allocateIOAS()
            _ = try context.map(third, source: .user(address: buffer(0x1000)), length: 0x1000, iova: window.start, access: .readWrite)
            expectVTdErrno(EADDRINUSE) { try context.replace(device, with: third.object) }
            #expect(!(try context.iovaRanges(second).ranges.contains { $0.overlaps(window) }))
            try context.detach(device)
            #expect(try context.iovaRanges(second).ranges.contains { $0.contains(window) })
        }
    }
}
