import IOASIDCore

/// The objects of a context and how they connect, drawn as inline SVG: devices and accesses on
/// the left, then vDevices, nested and SVA HWPTs and vIOMMU queues, then vIOMMUs, then paging
/// HWPTs, and the IOAS and fault queues on the right. An arrow reads "uses" or "attached to";
/// device arrows are labelled with the RID or the PASID.
struct ObjectGraph {
    let snapshot: ContextSnapshot
    static let nodeWidth: Double = 140
    static let nodeHeight: Double = 36
    static let columnGap: Double = 74
    static let rowPitch: Double = 50

    struct Node {
        var id: UInt32
        var kind: String  // CSS class
        var title: String
        var detail: String
        var column: Int
        var row = 0
    }

    struct Edge {
        var from: UInt32
        var to: UInt32
        var label: String
    }

    var nodesAndEdges: (nodes: [Node], edges: [Edge]) {
        var nodes: [Node] = []
        var edges: [Edge] = []
        for d in snapshot.devices {
            nodes.append(Node(id: d.id, kind: "device", title: "device #\(d.id)", detail: d.model, column: 0))
            for a in d.attachments {
                edges.append(Edge(from: d.id, to: a.hwpt, label: a.pasid.map { "PASID \($0)" } ?? "RID"))
            }
        }
        for a in snapshot.accesses {
            nodes.append(Node(id: a.id, kind: "access", title: "access #\(a.id)",
                              detail: a.pinned.isEmpty ? "no pins" : "\(a.pinned.count) pinned spans", column: 0))
            if let i = a.ioas { edges.append(Edge(from: a.id, to: i, label: "access")) }
        }
        for o in snapshot.others {
            nodes.append(Node(id: o.id, kind: "other", title: "#\(o.id)", detail: o.kind, column: 0))
        }
        for v in snapshot.vdevices {
            nodes.append(Node(id: v.id, kind: "vdevice", title: "vDevice #\(v.id)", detail: "virtual ID \(HTML.hex(v.virtualID))", column: 1))
            edges.append(Edge(from: v.device, to: v.id, label: "as"))
            edges.append(Edge(from: v.id, to: v.viommu, label: ""))
        }
        for h in snapshot.hwpts {
            var flags: [String] = []
            if h.isAutoDomain { flags.append("auto") }
            if h.isNestParent { flags.append("nest parent") }
            if h.pasidCompatible { flags.append("PASID") }
            if h.dirtyTracking { flags.append("dirty") }
            switch h.kind {
            case .paging(let ioas):
                nodes.append(Node(id: h.id, kind: "hwpt", title: "HWPT #\(h.id) paging",
                                  detail: flags.isEmpty ? "" : flags.joined(separator: ", "), column: 3))
                edges.append(Edge(from: h.id, to: ioas, label: ""))
            case .nested(let parent, let viommu):
                nodes.append(Node(id: h.id, kind: "hwpt nested", title: "HWPT #\(h.id) nested",
                                  detail: flags.isEmpty ? "stage 1" : flags.joined(separator: ", "), column: 1))
                edges.append(Edge(from: h.id, to: viommu ?? parent, label: ""))
            case .sva(let pid):
                nodes.append(Node(id: h.id, kind: "hwpt nested", title: "HWPT #\(h.id) SVA", detail: "process \(pid)", column: 1))
            }
            if let f = h.faultQueue { edges.append(Edge(from: h.id, to: f, label: "faults")) }
        }
        for v in snapshot.viommus {
            nodes.append(Node(id: v.id, kind: "viommu", title: "vIOMMU #\(v.id)", detail: "type \(v.type)", column: 2))
            edges.append(Edge(from: v.id, to: v.parent, label: ""))
        }
        for q in snapshot.eventQueues {
            nodes.append(Node(id: q.id, kind: "queue", title: "vEVENTQ #\(q.id)", detail: "\(q.pending) pending", column: 1))
            if let v = q.viommu { edges.append(Edge(from: q.id, to: v, label: "")) }
        }
        for q in snapshot.hwQueues {
            nodes.append(Node(id: q.id, kind: "queue", title: "HW queue #\(q.id)", detail: "index \(q.index) at \(HTML.hex(q.base))", column: 1))
            edges.append(Edge(from: q.id, to: q.viommu, label: ""))
        }
        for i in snapshot.ioas {
            nodes.append(Node(id: i.id, kind: "ioas", title: "IOAS #\(i.id)", detail: "\(i.areas.count) areas", column: 4))
        }
        for q in snapshot.faultQueues {
            nodes.append(Node(id: q.id, kind: "queue", title: "fault queue #\(q.id)",
                              detail: "\(q.pending) pending, \(q.awaitingResponse) unanswered", column: 4))
        }
        var perColumn = [Int](repeating: 0, count: 5)
        for i in nodes.indices {
            nodes[i].row = perColumn[nodes[i].column]
            perColumn[nodes[i].column] += 1
        }
        let known = Set(nodes.map(\.id))
        return (nodes, edges.filter { known.contains($0.from) && known.contains($0.to) })
    }

    func svg() -> String {
        let (nodes, edges) = nodesAndEdges
        guard !nodes.isEmpty else { return "<p class=\"note\">No objects.</p>" }
        let rows = (0..<5).map { c in nodes.filter { $0.column == c }.count }.max() ?? 1
        let width = 5 * Self.nodeWidth + 4 * Self.columnGap + 20
        let height = Double(rows) * Self.rowPitch + 10
        func origin(_ n: Node) -> (x: Double, y: Double) {
            (10 + Double(n.column) * (Self.nodeWidth + Self.columnGap), 5 + Double(n.row) * Self.rowPitch)
        }
        var byID: [UInt32: Node] = [:]
        for n in nodes { byID[n.id] = n }
        var s = "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(HTML.coordinate(width))\" height=\"\(HTML.coordinate(height))\" viewBox=\"0 0 \(HTML.coordinate(width)) \(HTML.coordinate(height))\" role=\"img\" aria-label=\"objects and connections\">"
        s += "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>"
        // Where arrows leave and arrive: spread along the node's side, so two arrows of one node
        // (RID and PASID) start apart and their labels do not overlap.
        var outgoing: [UInt32: Int] = [:], incoming: [UInt32: Int] = [:]
        for e in edges { outgoing[e.from, default: 0] += 1; incoming[e.to, default: 0] += 1 }
        var outSeen: [UInt32: Int] = [:], inSeen: [UInt32: Int] = [:]
        func spread(_ y: Double, _ index: Int, _ count: Int) -> Double {
            y + Self.nodeHeight * Double(index + 1) / Double(count + 1)
        }
        var paths = "", labels = ""
        var laneCount = 0
        for e in edges {
            guard let a = byID[e.from], let b = byID[e.to] else { continue }
            let (ax, ay) = origin(a), (bx, by) = origin(b)
            let y1 = spread(ay, outSeen[e.from, default: 0], outgoing[e.from] ?? 1)
            let y2 = spread(by, inSeen[e.to, default: 0], incoming[e.to] ?? 1)
            outSeen[e.from, default: 0] += 1
            inSeen[e.to, default: 0] += 1
            let x1: Double, x2: Double
            if b.column > a.column { x1 = ax + Self.nodeWidth; x2 = bx }
            else if b.column < a.column { x1 = ax; x2 = bx + Self.nodeWidth }
            else { x1 = ax + Self.nodeWidth; x2 = bx + Self.nodeWidth }
            let d: String
            let p = HTML.coordinate
            if abs(b.column - a.column) > 1 {
                // An arrow that skips a column runs in the gap between two rows, past the nodes.
                let dir: Double = x2 > x1 ? 1 : -1
                // Arrows sharing a gap run a few pixels apart.
                let gap = Self.rowPitch - Self.nodeHeight
                let offset = Double(laneCount % 3 - 1) * gap / 4
                laneCount += 1
                let lane = (b.row >= a.row ? ay + Self.nodeHeight + gap / 2 : ay - gap / 2) + offset
                d = "M\(p(x1)),\(p(y1)) C\(p(x1 + dir * 18)),\(p(y1)) \(p(x1 + dir * 18)),\(p(lane)) \(p(x1 + dir * 36)),\(p(lane)) "
                    + "L\(p(x2 - dir * 36)),\(p(lane)) C\(p(x2 - dir * 18)),\(p(lane)) \(p(x2 - dir * 18)),\(p(y2)) \(p(x2)),\(p(y2))"
            } else {
                // Halfway across to the next column, or a loop to the right within one column.
                let c1: Double, c2: Double
                if a.column == b.column { c1 = x1 + 40; c2 = x2 + 40 } else { c1 = (x1 + x2) / 2; c2 = (x1 + x2) / 2 }
                d = "M\(p(x1)),\(p(y1)) C\(p(c1)),\(p(y1)) \(p(c2)),\(p(y2)) \(p(x2)),\(p(y2))"
            }
            paths += "<path class=\"edge\" d=\"\(d)\" marker-end=\"url(#arrow)\"/>"
            if !e.label.isEmpty {
                // At the start of the arrow, so it is clear whose arrow it is; drawn over the nodes.
                let forward = x2 >= x1
                labels += "<text class=\"edgelabel\" x=\"\(HTML.coordinate(x1 + (forward ? 5 : -5)))\" y=\"\(HTML.coordinate(y1 - 3))\" text-anchor=\"\(forward ? "start" : "end")\">\(HTML.escape(e.label))</text>"
            }
        }
        // Arrows under the nodes (one that skips a column passes behind the node there), labels on top.
        s += paths
        for n in nodes {
            let (x, y) = origin(n)
            s += "<g class=\"node \(n.kind)\"><rect x=\"\(HTML.coordinate(x))\" y=\"\(HTML.coordinate(y))\" width=\"\(HTML.coordinate(Self.nodeWidth))\" height=\"\(HTML.coordinate(Self.nodeHeight))\" rx=\"5\"/>"
            s += "<text class=\"nodetitle\" x=\"\(HTML.coordinate(x + 7))\" y=\"\(HTML.coordinate(y + 15))\">\(HTML.escape(n.title))</text>"
            s += "<text class=\"nodedetail\" x=\"\(HTML.coordinate(x + 7))\" y=\"\(HTML.coordinate(y + 29))\">\(HTML.escape(truncated(n.detail, 24)))</text>"
            s += "<title>\(HTML.escape(n.title + (n.detail.isEmpty ? "" : ": " + n.detail)))</title></g>"
        }
        s += labels
        s += "</svg>"
        return s
    }

    private func truncated(_ text: String, _ limit: Int) -> String {
        text.count <= limit ? text : String(text.prefix(limit - 1)) + "…"
    }
}
