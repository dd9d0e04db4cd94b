// `ioasid demo`: the IOASID design (docs/demo.md) end to end, on the software IOMMU.

/// The built-in scenario of `ioasid demo`.
///
/// It runs the IOASID layer, the core, the VT-d and SMMUv3 drivers and their hardware models in
/// this process, with real memory: host-physical addresses are this process's user addresses,
/// guest RAM is a page-aligned buffer the VMM maps into an IOAS, and every DMA is a device
/// model's request through the modelled IOMMU. Each outcome in the report is read back from the
/// system (guest memory, PASID and stream table entries, fault records, set counts, errno
/// values), and compared with what the design promises.
///
/// What it shows, in order (see `docs/demo.md`):
/// 1. a host PASID allocator (20 bits) with three IOASID sets and quotas: one per VM and one for
///    a mediated-device vendor driver; each VM's context is enrolled in its set;
/// 2. **vm1, Intel model**: a function behind the VT-d unit in nested (vSVA) mode — the guest's
///    PASID becomes a host PASID through the set's private IDs, the guest's first-stage table
///    sits over the nesting parent at that host PASID, and DMA lands in guest memory;
/// 3. **vm2, ARM model**: an SMMUv3 device bound to the guest's own CD table; the host allocates
///    no PASID (its set stays empty), and DMA with a SubstreamID lands;
/// 4. **mediated devices**: one parent function behind VT-d, two mediated devices on PASIDs of
///    the vendor set, one in each VM; each DMA (parent RID + its PASID) lands in its VM only;
/// 5. **vDPA**: data and control virtqueue groups on two PASIDs of vm2's set, each group's DMA
///    lands in its own address space; changing one while running is `EBUSY`;
/// 6. **authorization**: vm1 attaching vm2's PASID is `EPERM`; DMA with a PASID never attached is
///    blocked and recorded as a fault;
/// 7. **a page fault answered**, 8. **an invalidation** forwarded from the guest,
/// 9. **a quota running out** (`ENOSPC`), and a freed PASID whose DMA is blocked afterwards.
public enum Demo {
    /// Runs the scenario and returns its report.
    ///
    /// - Parameter echo: called with each step as it is recorded (for a live timeline).
    /// - Returns: the timeline and the summary. The run never stops on an unexpected outcome: it
    ///   is recorded (`asExpected == false`). If a step the rest depends on fails, the scenario
    ///   stops there with a last step saying so.
    public static func run(echo: ((DemoEvent) -> Void)? = nil) -> DemoReport {
        let recorder = DemoRecorder(echo: echo)
        let scenario = Scenario(recorder: recorder)
        do {
            try scenario.play()
        } catch {
            recorder.record("demo", "scenario stopped", "the remaining steps depend on the failed one: \(describe(error))",
                            expected: false)
        }
        scenario.summarize()
        scenario.tearDown()
        return recorder.report
    }
}
