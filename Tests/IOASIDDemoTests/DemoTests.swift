// `ioasid demo`: the scenario's report says what the design promises, step by step.
import Foundation
import IOASIDDemo
import Testing

@Suite struct DemoTests {
    /// The first event whose actor is `actor` and whose action contains `action`.
    static func event(_ report: DemoReport, _ actor: String, _ action: String,
                      sourceLocation: SourceLocation = #_sourceLocation) throws -> DemoEvent {
        try #require(report.events.first { $0.actor == actor && $0.action.contains(action) },
                     "no step \(actor): \(action)", sourceLocation: sourceLocation)
    }

    @Test func everyStepGoesAsTheDesignSays() {
        pinsUserMemory {
            var echoed: [DemoEvent] = []
            let report = Demo.run { echoed.append($0) }
            let bad = report.events.filter { !$0.asExpected }
            #expect(bad.isEmpty, "\(bad.map(DemoReport.line))")
            #expect(report.allAsExpected)
            #expect(report.events.count >= 45)
            #expect(report.events.map(\.step) == Array(1...report.events.count))
            #expect(echoed == report.events, "each step is echoed as it is recorded")
            #expect(Set(report.events.map(\.actor)).isSuperset(of: ["host", "vm1", "vm2", "guest1", "guest2", "vf0", "smmu0",
                                                                   "mdev-a", "mdev-b", "vdpa0"]))
        }
    }

    @Test func theOutcomesAreTheOnesTheSeedAsksFor() throws {
        try pinsUserMemory {
            let report = Demo.run()
            // Host-allocated model: the guest's PASID maps to a host PASID through the set's private IDs.
            let alloc = try Self.event(report, "vm1", "guest's vIOMMU wants PASID 5")
            #expect(alloc.asExpected && alloc.outcome.contains("guest 5 ↔ host 1"))
            #expect(try Self.event(report, "vm1", "nested HWPT").outcome.contains("PGTT nested"))
            #expect(try Self.event(report, "vf0", "DMA write \"vSVA\"").outcome.contains("vm1's RAM reads \"vSVA\""))
            // Guest-owned model: the host allocated nothing for vm2's SMMUv3 device.
            let arm = try Self.event(report, "host", "count vm2's host PASIDs")
            #expect(arm.asExpected && arm.outcome.contains("set#2 holds 0 PASIDs"))
            #expect(try Self.event(report, "vm2", "nested HWPT from the guest's STE").outcome.contains("Config nested"))
            #expect(try Self.event(report, "smmu0", "SubstreamID 3").outcome.contains("vm2's RAM reads \"SSID\""))
            // Mediated devices: each lands in its VM only; the parent's RID reaches nothing.
            #expect(try Self.event(report, "mdev-a", "DMA write").outcome.contains("vm2's RAM at the same GPA: zeros"))
            #expect(try Self.event(report, "mdev-b", "DMA write").outcome.contains("vm1's RAM still \"mdA!\""))
            #expect(try Self.event(report, "02:00.0", "parent's RID").outcome.contains("fault record 0x59"))
            // vDPA: each group's DMA in its own address space; no change while running.
            #expect(try Self.event(report, "vdpa0", "virtqueue 0").outcome.contains("shadow CVQ memory: zeros"))
            #expect(try Self.event(report, "vdpa0", "virtqueue 2").outcome.contains("shadow CVQ memory reads \"ctrl\""))
            let busy = try Self.event(report, "vm2", "while running")
            #expect(busy.asExpected && busy.outcome.hasPrefix("refused: EBUSY"))
            // Authorization.
            let eperm = try Self.event(report, "vm1", "vm2's vdpa0 data PASID")
            #expect(eperm.asExpected && eperm.outcome.hasPrefix("refused: EPERM"))
            let blocked = try Self.event(report, "vf0", "never attached")
            #expect(blocked.asExpected && blocked.outcome.hasPrefix("blocked") && blocked.outcome.contains("fault record"))
            // A page fault answered and retried.
            #expect(try Self.event(report, "vf0", "unmapped by guest").outcome.contains("page request sent"))
            #expect(try Self.event(report, "vm1", "reads its fault queue").outcome.contains("1 fault"))
            let retry = try Self.event(report, "vf0", "retries the DMA")
            #expect(retry.asExpected && retry.outcome.contains("reads \"PRI!\""))
            // Invalidation: stale until forwarded, then the new translation.
            #expect(try Self.event(report, "vf0", "\"old!\"").outcome.contains("still hold the old translation"))
            #expect(try Self.event(report, "vm1", "forwards the guest's invalidation").outcome.hasPrefix("1 entry handled"))
            #expect(try Self.event(report, "vf0", "\"new!\"").outcome.contains("landed in page 5"))
            // The quota runs out; a freed PASID is blocked and its quota comes back.
            let nospc = try Self.event(report, "vm1", "wants PASID 7")
            #expect(nospc.asExpected && nospc.outcome.hasPrefix("refused: ENOSPC"))
            #expect(try Self.event(report, "vm1", "frees host PASID").outcome.contains("notifications: unbind, free"))
            #expect(try Self.event(report, "vf0", "freed PASID").outcome.hasPrefix("blocked"))
            #expect(try Self.event(report, "vm1", "wants PASID 7 again").asExpected)
            let last = try #require(report.events.last)
            #expect(last.actor == "host" && last.outcome.contains("3 of 3 sets freed") && last.asExpected)
        }
    }

    @Test func theSummaryHasOneRowPerSet() {
        pinsUserMemory {
            let report = Demo.run()
            #expect(report.summary.map(\.actor) == ["vm1", "vm2", "vendor"])
            let vm1 = report.summary[0], vm2 = report.summary[1], vendor = report.summary[2]
            #expect(vm1.set == 1 && vm1.quota == DemoQuota(used: 2, limit: 2))
            #expect(vm1.pasids == [DemoPASID(host: 1, guest: 7), DemoPASID(host: 6, guest: 6)])
            #expect(vm1.dmaCompleted == 4 && vm1.dmaBlocked == 2 && vm1.faultsAnswered == 1)
            #expect(vm2.pasids == [DemoPASID(host: 4), DemoPASID(host: 5)] && vm2.dmaCompleted == 3 && vm2.dmaBlocked == 0)
            #expect(vm2.devices == [DemoDevice("smmu0", note: "SSIDs guest-owned"), DemoDevice("vdpa0")])
            #expect(vendor.pasids == [DemoPASID(host: 2), DemoPASID(host: 3)] && vendor.dmaCompleted == 2 && vendor.dmaBlocked == 1)
            let text = report.text()
            #expect(text.contains("all \(report.events.count) steps went as the design says"))
            for e in report.events { #expect(text.contains(DemoReport.line(e))) }
            #expect(text.contains("held/quota"))
        }
    }

    @Test func theJSONRoundTrips() throws {
        try pinsUserMemory {
            let report = Demo.run()
            let json = try report.json()
            let back = try DemoReport(json: json)
            #expect(back.events == report.events)
            #expect(back.summary == report.summary)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            #expect(object["allAsExpected"] as? Bool == true)
            #expect((object["events"] as? [Any])?.count == report.events.count)
            #expect((object["summary"] as? [Any])?.count == 3)
        }
    }

    @Test func anUnexpectedOutcomeIsMarkedInTheTextAndTheVerdict() {
        var report = DemoReport()
        report.events = [DemoEvent(step: 1, actor: "vm1", action: "a", outcome: "ok", asExpected: true),
                         DemoEvent(step: 2, actor: "vm1", action: "b", outcome: "EPERM", asExpected: false)]
        #expect(!report.allAsExpected)
        #expect(DemoReport.line(report.events[1]).contains("UNEXPECTED: EPERM"))
        #expect(report.text().contains("1 of 2 steps did NOT go as expected"))
    }

    /// The built `ioasid demo`: exit status 0, text and JSON.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: DemoBinary.path)))
    func theCommandLineToolRunsIt() throws {
        let (text, status) = try DemoBinary.run([])
        #expect(status == 0)
        #expect(text.contains("all ") && text.contains("steps went as the design says"))
        #expect(text.split(separator: "\n").first?.contains("create the host PASID allocator") == true)
        let (json, jsonStatus) = try DemoBinary.run(["--json"])
        #expect(jsonStatus == 0)
        let report = try DemoReport(json: json)
        #expect(report.allAsExpected && report.summary.count == 3)
    }
}

/// The `ioasid` executable next to the test runner (`IOASID_BIN_PATH` overrides the directory).
enum DemoBinary {
    static let path: String = {
        if let dir = ProcessInfo.processInfo.environment["IOASID_BIN_PATH"] { return dir + "/ioasid" }
        let runner = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: runner).deletingLastPathComponent().path + "/ioasid"
    }()

    static func run(_ arguments: [String]) throws -> (String, Int32) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["demo"] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (String(decoding: data, as: UTF8.self), process.terminationStatus)
    }
}
