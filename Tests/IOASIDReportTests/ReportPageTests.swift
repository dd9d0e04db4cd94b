import Foundation
import IOASIDCore
import IOASIDLinuxABI
import IOASIDStructures
import Testing
@testable import IOASIDReport

/// A context as a VMM leaves it: an IOAS with two areas (one from a file), a reserved and an
/// allowed span, a device attached by RID and PASID, a nested HWPT over a vIOMMU with a fault
/// queue, a vDevice, and a device model whose name needs escaping.
func handBuiltSnapshot() -> ContextSnapshot {
    var s = ContextSnapshot()
    s.ioas = [.init(id: 1,
                    areas: [.init(iova: IOVARange(start: 0x10_0000, last: 0x10_0fff), userAddress: 0x7f00_0000_0000,
                                  readable: true, writable: true, fromFile: false),
                            .init(iova: IOVARange(start: 0x4000_0000, last: 0x7fff_ffff), userAddress: 0x7f10_0000_0000,
                                  readable: true, writable: false, fromFile: true)],
                    allowed: [IOVARange(start: 0, last: 0xffff_ffff)],
                    reserved: [.init(range: IOVARange(start: 0xfee0_0000, last: 0xfeef_ffff), owner: .device(3))],
                    usable: [IOVARange(start: 0, last: 0xfedf_ffff), IOVARange(start: 0xfef0_0000, last: .max)],
                    iovaAlignment: 4096)]
    s.devices = [.init(id: 3, model: "Evil<script>alert('x')</script>&Co", boundByDriver: true,
                       attachments: [.init(pasid: nil, hwpt: 6), .init(pasid: 5, hwpt: 4)])]
    s.hwpts = [.init(id: 2, kind: .paging(ioas: 1), isNestParent: true),
               .init(id: 4, kind: .paging(ioas: 1), pasidCompatible: true),
               .init(id: 6, kind: .nested(parent: 2, viommu: 7), faultQueue: 5)]
    s.faultQueues = [.init(id: 5, pending: 1, awaitingResponse: 0)]
    s.viommus = [.init(id: 7, type: 0xdead, parent: 2)]
    s.vdevices = [.init(id: 8, viommu: 7, device: 3, virtualID: 0x42)]
    s.pinnedPages = 262_145
    s.chargedPages = ChargedPages(perUser: 262_145)
    return s
}

func handBuiltDocument(closed: Bool = true) -> ReportDocument {
    let full = handBuiltSnapshot()
    var end = ContextSnapshot()
    end.ioas = [.init(id: 1)]
    let calls = [
        ContextRecorder.CallRow(name: "IOMMU_IOAS_MAP", count: 3, errors: [("EINVAL", 2)], totalNanoseconds: 4_500,
                                medianNanoseconds: 1_250),
        ContextRecorder.CallRow(name: "IOMMU_DESTROY", count: 1, totalNanoseconds: 800, medianNanoseconds: 800),
    ]
    return ReportDocument(program: "./vmm --guest <a&b>", pid: 4242, written: "2026-12-03 11:00:00 UTC", contexts: [
        ContextReport(sequence: 1, descriptor: 3, closed: closed,
                      final: .init(snapshot: end, when: "when it was closed, after 4 calls"),
                      fullest: .init(snapshot: full, when: "after call 3 (IOMMU_IOAS_MAP)"), calls: calls),
    ])
}

/// How often `needle` occurs in `text`.
func occurrences(of needle: String, in text: String) -> Int {
    text.components(separatedBy: needle).count - 1
}

@Suite("The HTML report page")
struct ReportPageTests {
    let page = ReportPage.html(handBuiltDocument())

    @Test func pageIsSelfContained() {
        #expect(page.hasPrefix("<!DOCTYPE html>"))
        #expect(!page.contains("<script"), "no scripts at all (the device name must be escaped)")
        #expect(!page.contains("<link") && !page.contains("src=") && !page.contains("@import") && !page.contains("url(http"))
        // The only URL is the SVG namespace, which is a name, not a fetch.
        #expect(occurrences(of: "http", in: page) == occurrences(of: "xmlns=\"http://www.w3.org/2000/svg\"", in: page))
        #expect(page.contains("<style>"))
    }

    @Test func namesAreEscaped() {
        #expect(page.contains("Evil&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;Co"))
        #expect(page.contains("./vmm --guest &lt;a&amp;b&gt;"))
        #expect(HTML.escape("a<b>&\"c'") == "a&lt;b&gt;&amp;&quot;c&#39;")
    }

    @Test func bothMomentsAreDrawnWhenTheFullestHeldMore() {
        #expect(page.contains("At its fullest, after call 3 (IOMMU_IOAS_MAP)"))
        #expect(page.contains("Closed, when it was closed, after 4 calls"))
        // Two IOAS layouts (one per moment), one object graph each.
        #expect(occurrences(of: "<svg class=\"layout\"", in: page) == 2)
        #expect(occurrences(of: "<svg class=\"graph\"", in: page) == 2)
    }

    @Test func layoutDrawsAreasHolesReservedAndAllowedWithTooltips() {
        #expect(occurrences(of: "<rect class=\"area\"", in: page) == 1)
        #expect(occurrences(of: "<rect class=\"area file\"", in: page) == 1)
        #expect(occurrences(of: "<rect class=\"reserved\"", in: page) == 1)
        #expect(occurrences(of: "<rect class=\"allowed\"", in: page) == 1)
        #expect(page.contains("<title>area: IOVA 0x100000–0x100fff (4 KiB) → user 0x7f0000000000, read/write</title>"))
        #expect(page.contains("<title>area: IOVA 0x40000000–0x7fffffff (1 GiB) → user 0x7f1000000000, read, from a file</title>"))
        #expect(page.contains("reserved: IOVA 0xfee00000–0xfeefffff (1 MiB), device #3&#39;s reserved region"))
        #expect(page.contains("piecewise logarithmic scale"))
    }

    @Test func holesAreTheGapsBetweenAreas() {
        let layout = IOVALayout(ioas: handBuiltSnapshot().ioas[0])
        #expect(layout.holes == [IOVARange(start: 0, last: 0xf_ffff), IOVARange(start: 0x10_1000, last: 0x3fff_ffff),
                                 IOVARange(start: 0x8000_0000, last: .max)])
        #expect(IOVALayout(ioas: .init(id: 1)).holes == [.all])
        let full = ContextSnapshot.IOAS(id: 1, areas: [.init(iova: .all, userAddress: 0, readable: true, writable: true, fromFile: false)])
        #expect(IOVALayout(ioas: full).holes.isEmpty)
    }

    @Test func objectGraphConnectsDevicesHWPTsAndIOAS() {
        let (nodes, edges) = ObjectGraph(snapshot: handBuiltSnapshot()).nodesAndEdges
        #expect(Set(nodes.map(\.id)) == [1, 2, 3, 4, 5, 6, 7, 8])
        func edge(_ a: UInt32, _ b: UInt32) -> ObjectGraph.Edge? { edges.first { $0.from == a && $0.to == b } }
        #expect(edge(3, 6)?.label == "RID")
        #expect(edge(3, 4)?.label == "PASID 5")
        #expect(edge(6, 7) != nil, "nested HWPT → its vIOMMU")
        #expect(edge(7, 2) != nil, "vIOMMU → its nest parent")
        #expect(edge(2, 1) != nil && edge(4, 1) != nil, "paging HWPTs → IOAS")
        #expect(edge(6, 5)?.label == "faults")
        #expect(edge(3, 8) != nil && edge(8, 7) != nil, "device → vDevice → vIOMMU")
        // Columns run from devices to the IOAS.
        let column = Dictionary(uniqueKeysWithValues: nodes.map { ($0.id, $0.column) })
        #expect(column[3]! < column[6]! && column[6]! < column[7]! && column[7]! < column[2]! && column[2]! < column[1]!)
        #expect(page.contains(">PASID 5</text>"))
    }

    @Test func pinnedPagesAndCallTable() {
        #expect(page.contains("262145 (1 GiB)"))
        #expect(page.contains("<code>IOMMU_IOAS_MAP</code></td><td class=\"n\">3</td><td class=\"err\">EINVAL ×2</td><td class=\"n\">4.5 µs</td><td class=\"n\">1.3 µs</td>"))
        #expect(page.contains("<td>all</td><td class=\"n\">4</td><td>2 failed</td><td class=\"n\">5.3 µs</td>"))
    }

    @Test func formats() {
        #expect(HTML.size(4096) == "4 KiB")
        #expect(HTML.size(1536 * 1024) == "1.5 MiB")
        #expect(HTML.size(nil) == "16 EiB")
        #expect(HTML.size(100) == "100 B")
        #expect(HTML.duration(850) == "850 ns")
        #expect(HTML.duration(12_340) == "12.3 µs")
        #expect(HTML.duration(1_250_000) == "1.25 ms")
        #expect(HTML.duration(2_000_000_000) == "2.00 s")
    }

    @Test func emptyAndOpenContexts() {
        let open = ReportPage.html(handBuiltDocument(closed: false))
        #expect(open.contains("still open at exit"))
        #expect(open.contains("Final, when it was closed"))
        let none = ReportPage.html(ReportDocument(program: "true", pid: 1, written: "now", contexts: []))
        #expect(none.contains("The program opened no /dev/iommu."))
    }
}

@Suite("The piecewise logarithmic IOVA scale")
struct PiecewiseScaleTests {
    @Test func endsAtTheGivenWidthAndKeepsOrder() {
        let cuts: [UInt64] = [0x1000, 0x2000, 0x10_0000, 0xfee0_0000, 1 << 47]
        let scale = PiecewiseScale(cuts: cuts, origin: 50, width: 800)
        #expect(scale.xs.first == 50 && scale.xs.last == 850)
        #expect(scale.cuts == [0] + cuts)
        for i in 1..<scale.xs.count { #expect(scale.xs[i] > scale.xs[i - 1]) }
        // Addresses map monotonically, within and across segments.
        var previous = -1.0
        for a: UInt64 in [0, 1, 0xfff, 0x1000, 0x1800, 0x2000, 0x8_0000, 0x10_0000, 0xfee0_0000, 1 << 47, 1 << 60, .max] {
            let x = scale.x(a)
            #expect(x >= previous, "x(\(a)) = \(x) < \(previous)")
            previous = x
        }
        #expect(scale.x(after: .max) == 850)
        #expect(scale.x(0x1000) == scale.xs[1])
    }

    @Test func smallSpansStayVisibleAndLargerSpansAreNotNarrower() {
        // A 4 KiB area at 1 MiB in the whole 64-bit space.
        let scale = PiecewiseScale(cuts: [0x10_0000, 0x10_1000], width: 900, minimumSegment: 6)
        let area = scale.x(after: 0x10_0fff) - scale.x(0x10_0000)
        #expect(area >= 6, "a linear scale would give it 2e-13 px")
        let widths = (0..<3).map { scale.xs[$0 + 1] - scale.xs[$0] }
        // Segments: [0, 1 MiB) 1 MiB, [1 MiB, +4 KiB) 4 KiB, [.., 2^64) ~16 EiB.
        #expect(widths[1] < widths[0] && widths[0] < widths[2])
        // With log2 weights, 16 EiB is drawn 65/13 times as wide as 4 KiB beyond the minimum.
        #expect(abs((widths[2] - 6) / (widths[1] - 6) - 65.0 / 13.0) < 0.01)
    }

    @Test func manyCutsShrinkTheMinimumToFit() {
        let cuts = (1...400).map { UInt64($0) * 0x1000 }
        let scale = PiecewiseScale(cuts: cuts, width: 800, minimumSegment: 6)
        #expect(abs(scale.xs.last! - 800) < 1e-9)
        for i in 1..<scale.xs.count { #expect(scale.xs[i] > scale.xs[i - 1]) }
    }

    @Test func log2MatchesPowersOfTwo() {
        for e in [1, 2, 10, 12, 40, 63, 64] {
            let v = 2.0 * pow2(e - 1)
            #expect(abs(log2Approximation(v) - Double(e)) < 1e-9)
        }
        #expect(abs(log2Approximation(3) - 1.584962500721156) < 1e-9)
        #expect(log2Approximation(0.5) == 0)
    }

    private func pow2(_ e: Int) -> Double { var v = 1.0; for _ in 0..<e { v *= 2 }; return v }
}
