import ArgumentParser
import IOASIDDemo

/// `ioasid demo [--json]`
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Show the IOASID design end to end on the software IOMMU.",
        discussion: """
            Runs a built-in scenario in this process: a host PASID allocator with IOASID sets \
            and quotas; vm1 (Intel model: a function behind VT-d in nested mode at a host PASID \
            mapped from the guest's PASID) and vm2 (ARM model: an SMMUv3 device bound to the \
            guest's own CD table); mediated devices on PASIDs of a vendor set; a vDPA device \
            whose two virtqueue groups use two PASIDs; an unauthorized PASID; a page fault \
            answered; an invalidation forwarded; a quota running out. Every outcome is read \
            back from the modelled hardware and memory.

            Prints one line per step (step, actor, action, outcome) and a summary table per \
            IOASID set. With --json, prints the report as JSON instead. The exit status is 1 \
            if any step did not go as the design says. See docs/demo.md.
            """)

    @Flag(name: .customLong("json"), help: "Print the report as JSON (events and summary) instead of text.")
    var json = false

    func run() throws {
        let report: DemoReport
        if json {
            report = Demo.run()
            print(try report.json())
        } else {
            report = Demo.run { print(DemoReport.line($0)) }
            print(report.summaryText(), terminator: "")
        }
        if !report.allAsExpected { throw ExitCode(1) }
    }
}
