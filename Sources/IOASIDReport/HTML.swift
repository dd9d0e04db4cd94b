/// Text for HTML and SVG: escaping and number formats shared by the report's parts.
enum HTML {
    /// `text` with the five characters that are markup in HTML and XML escaped; safe in element
    /// content and in quoted attribute values.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// An address in hex, `0x`-prefixed.
    static func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

    /// A byte count in binary units (`4 KiB`, `1.5 MiB`, `16 EiB`); exact counts below 1 KiB.
    static func size(_ bytes: UInt64?) -> String {
        guard let bytes else { return "16 EiB" }
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        if unit == 0 { return "\(bytes) B" }
        let rounded = (value * 10).rounded() / 10
        let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
        return "\(text) \(units[unit])"
    }

    /// A duration (`850 ns`, `12.3 µs`, `1.25 ms`, `2.00 s`).
    static func duration(_ nanoseconds: UInt64) -> String {
        let n = Double(nanoseconds)
        func fixed(_ v: Double, _ digits: Int) -> String {
            var p = 1.0
            for _ in 0..<digits { p *= 10 }
            let r = (v * p).rounded() / p
            var s = String(r)
            if let dot = s.firstIndex(of: ".") {
                let decimals = s.distance(from: dot, to: s.endIndex) - 1
                if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
            }
            return s
        }
        if nanoseconds < 1_000 { return "\(nanoseconds) ns" }
        if nanoseconds < 1_000_000 { return fixed(n / 1e3, 1) + " µs" }
        if nanoseconds < 1_000_000_000 { return fixed(n / 1e6, 2) + " ms" }
        return fixed(n / 1e9, 2) + " s"
    }

    /// A span of IOVA as `0xSTART–0xLAST`.
    static func span(_ start: UInt64, _ last: UInt64) -> String { "\(hex(start))–\(hex(last))" }

    /// A number for SVG coordinates: at most one decimal.
    static func coordinate(_ v: Double) -> String {
        let r = (v * 10).rounded() / 10
        return r == r.rounded() ? String(Int(r)) : String(r)
    }
}
