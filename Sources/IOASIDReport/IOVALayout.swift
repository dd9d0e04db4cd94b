import IOASIDCore
import IOASIDStructures

/// The IOVA layout of one IOAS drawn as inline SVG: rows for areas (with the holes between
/// them), reserved spans and allowed spans, on a ``PiecewiseScale``, each shape with a
/// `<title>` tooltip giving its exact span, size and, for areas, the user address.
struct IOVALayout {
    let ioas: ContextSnapshot.IOAS
    var width: Double = 960
    static let labelColumn: Double = 78
    static let rowHeight: Double = 22
    static let rowGap: Double = 6
    static let axisHeight: Double = 84

    /// The spans of IOVA no area covers.
    var holes: [IOVARange] {
        var result: [IOVARange] = []
        var next: UInt64? = 0  // nil once past 2^64 - 1
        for a in ioas.areas.sorted(by: { $0.iova.start < $1.iova.start }) {
            if let n = next, a.iova.start > n { result.append(IOVARange(start: n, last: a.iova.start - 1)) }
            next = a.iova.last == .max ? nil : a.iova.last + 1
        }
        if let n = next { result.append(IOVARange(start: n, last: .max)) }
        return result
    }

    /// Every address where a drawn span starts or ends.
    var cuts: [UInt64] {
        var cuts: [UInt64] = [0]
        func add(_ r: IOVARange) {
            cuts.append(r.start)
            if r.last != .max { cuts.append(r.last + 1) }
        }
        ioas.areas.forEach { add($0.iova) }
        ioas.reserved.forEach { add($0.range) }
        ioas.allowed.forEach(add)
        return cuts
    }

    var scale: PiecewiseScale {
        PiecewiseScale(cuts: cuts, origin: Self.labelColumn, width: width - Self.labelColumn - 10)
    }

    func svg() -> String {
        let scale = self.scale
        let rows = 3
        let height = Double(rows) * (Self.rowHeight + Self.rowGap) + Self.axisHeight
        var s = "<svg class=\"layout\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(HTML.coordinate(width))\" height=\"\(HTML.coordinate(height))\" viewBox=\"0 0 \(HTML.coordinate(width)) \(HTML.coordinate(height))\" role=\"img\" aria-label=\"IOVA layout of IOAS \(ioas.id)\">"
        func rowY(_ row: Int) -> Double { Double(row) * (Self.rowHeight + Self.rowGap) }
        func label(_ row: Int, _ text: String) {
            s += "<text class=\"rowlabel\" x=\"4\" y=\"\(HTML.coordinate(rowY(row) + 15))\">\(HTML.escape(text))</text>"
        }
        func rect(_ row: Int, _ r: IOVARange, _ cls: String, _ title: String) {
            let x0 = scale.x(r.start), x1 = scale.x(after: r.last)
            s += "<rect class=\"\(cls)\" x=\"\(HTML.coordinate(x0))\" y=\"\(HTML.coordinate(rowY(row)))\" width=\"\(HTML.coordinate(Swift.max(1, x1 - x0)))\" height=\"\(HTML.coordinate(Self.rowHeight))\"><title>\(HTML.escape(title))</title></rect>"
        }
        func describe(_ r: IOVARange) -> String { "IOVA \(HTML.span(r.start, r.last)) (\(HTML.size(r.length)))" }

        label(0, "areas")
        for h in holes { rect(0, h, "hole", "hole: " + describe(h)) }
        for a in ioas.areas {
            let access = [a.readable ? "read" : nil, a.writable ? "write" : nil].compactMap { $0 }.joined(separator: "/")
            rect(0, a.iova, a.fromFile ? "area file" : "area",
                 "area: \(describe(a.iova)) → user \(HTML.hex(a.userAddress)), \(access)\(a.fromFile ? ", from a file" : "")")
        }
        label(1, "reserved")
        if ioas.reserved.isEmpty { emptyRow(&s, rowY(1), "none") }
        for r in ioas.reserved {
            let owner: String
            switch r.owner {
            case .user: owner = "reserved by the user"
            case .domain: owner = "outside an attached domain's aperture"
            case .device(let d): owner = "device #\(d)'s reserved region"
            }
            rect(1, r.range, "reserved", "reserved: \(describe(r.range)), \(owner)")
        }
        label(2, "allowed")
        if ioas.allowed.isEmpty { emptyRow(&s, rowY(2), "no restriction (all IOVA allowed)") }
        for r in ioas.allowed { rect(2, r, "allowed", "allowed: " + describe(r)) }

        // The axis: a tick and a rotated label at each cut, leaving out labels that would overlap.
        let axisY = rowY(rows)
        s += "<line class=\"axis\" x1=\"\(HTML.coordinate(Self.labelColumn))\" y1=\"\(HTML.coordinate(axisY))\" x2=\"\(HTML.coordinate(scale.xs.last!))\" y2=\"\(HTML.coordinate(axisY))\"/>"
        var lastLabel = -Double.infinity
        let ticks = scale.cuts.map { (HTML.hex($0), scale.x($0)) } + [("2^64", scale.xs.last!)]
        for (text, x) in ticks {
            s += "<line class=\"tick\" x1=\"\(HTML.coordinate(x))\" y1=\"0\" x2=\"\(HTML.coordinate(x))\" y2=\"\(HTML.coordinate(axisY + 4))\"/>"
            guard x - lastLabel >= 11 else { continue }
            lastLabel = x
            s += "<text class=\"tick\" transform=\"translate(\(HTML.coordinate(x + 3)),\(HTML.coordinate(axisY + 8))) rotate(50)\">\(text)</text>"
        }
        s += "</svg>"
        return s
    }

    private func emptyRow(_ s: inout String, _ y: Double, _ text: String) {
        s += "<text class=\"note\" x=\"\(HTML.coordinate(Self.labelColumn + 4))\" y=\"\(HTML.coordinate(y + 15))\">\(HTML.escape(text))</text>"
    }
}
