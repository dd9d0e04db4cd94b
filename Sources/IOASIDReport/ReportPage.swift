import IOASIDCore
import IOASIDLinuxABI

/// The report as one self-contained HTML page: inline CSS and SVG, no scripts, nothing fetched.
///
/// Per open of `/dev/iommu`: the state at its fullest and at the end (each IOAS's IOVA layout,
/// the objects and their connections, pinned pages and accounting) and the table of calls.
public enum ReportPage {
    /// The page for `document`.
    public static func html(_ document: ReportDocument) -> String {
        var s = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        s += "<title>ioasid report: \(HTML.escape(document.program))</title>"
        s += "<style>\(style)</style></head><body>"
        s += "<h1>ioasid report</h1>"
        s += "<p class=\"meta\">Program <code>\(HTML.escape(document.program))</code>, process \(document.pid); written \(HTML.escape(document.written)). "
        s += "\(document.contexts.count) open\(document.contexts.count == 1 ? "" : "s") of <code>/dev/iommu</code>.</p>"
        s += "<p class=\"meta\">IOVA layouts use a <b>piecewise logarithmic scale</b>: the addresses where an area, a reserved or an allowed span starts or ends cut the 64-bit space into segments; each segment is drawn with a width that grows with the logarithm of its size (linear within it), so a 4 KiB area stays visible next to an exabyte hole. Hover a shape for its exact span.</p>"
        if document.contexts.isEmpty { s += "<p class=\"note\">The program opened no /dev/iommu.</p>" }
        if document.contexts.count > 1 {
            s += "<table class=\"summary\"><tr><th>open</th><th>fd</th><th>state</th><th>calls</th><th>errors</th><th>objects at the end</th></tr>"
            for c in document.contexts {
                let calls = c.calls.reduce(0) { $0 + $1.count }
                let errors = c.calls.reduce(0) { $0 + $1.errors.reduce(0) { $0 + $1.count } }
                s += "<tr><td><a href=\"#context-\(c.sequence)\">#\(c.sequence)</a></td><td>\(c.descriptor)</td><td>\(c.closed ? "closed" : "open at exit")</td><td class=\"n\">\(calls)</td><td class=\"n\">\(errors)</td><td class=\"n\">\(c.final?.snapshot.objectCount ?? 0)</td></tr>"
            }
            s += "</table>"
        }
        for c in document.contexts { s += context(c) }
        s += "</body></html>\n"
        return s
    }

    static func context(_ c: ContextReport) -> String {
        var s = "<section class=\"context\" id=\"context-\(c.sequence)\">"
        s += "<h2>/dev/iommu open #\(c.sequence) <span class=\"sub\">fd \(c.descriptor), \(c.closed ? "closed by the program" : "still open at exit")</span></h2>"
        for (title, moment) in c.moments { s += state(title, moment.snapshot) }
        s += "<h3>Calls</h3>" + calls(c.calls)
        s += "</section>"
        return s
    }

    static func state(_ title: String, _ snapshot: ContextSnapshot) -> String {
        var s = "<div class=\"moment\"><h3>\(HTML.escape(title))</h3>"
        s += pinned(snapshot)
        s += "<h4>Objects and connections</h4>" + ObjectGraph(snapshot: snapshot).svg()
        s += objectList(snapshot)
        for ioas in snapshot.ioas {
            s += "<h4>IOAS #\(ioas.id): IOVA layout</h4>"
            s += "<p class=\"meta\">\(ioas.areas.count) area\(ioas.areas.count == 1 ? "" : "s"), \(ioas.reserved.count) reserved span\(ioas.reserved.count == 1 ? "" : "s"), "
            s += "\(ioas.allowed.isEmpty ? "no allowed-span restriction" : "\(ioas.allowed.count) allowed span\(ioas.allowed.count == 1 ? "" : "s")"), IOVA alignment \(HTML.hex(ioas.iovaAlignment)). "
            s += "<span class=\"key area\">area</span> <span class=\"key file\">area from a file</span> <span class=\"key hole\">hole</span> <span class=\"key reserved\">reserved</span> <span class=\"key allowed\">allowed</span></p>"
            s += IOVALayout(ioas: ioas).svg()
            s += areaTable(ioas)
        }
        s += "</div>"
        return s
    }

    static func pinned(_ snapshot: ContextSnapshot) -> String {
        let mode: String
        switch snapshot.accountingMode {
        case .none: mode = "none"
        case .perUser: mode = "per user (RLIMIT_MEMLOCK)"
        case .perProcess: mode = "per process (pinned_vm)"
        }
        let c = snapshot.chargedPages
        var s = "<table class=\"pins\"><tr><th>pinned pages</th><th>accounting mode</th><th>charged per user</th><th>charged per process</th><th>not charged</th></tr>"
        s += "<tr><td class=\"n\">\(snapshot.pinnedPages) (\(HTML.size(snapshot.pinnedPages * snapshot.pageSize)))</td><td>\(mode)</td>"
        s += "<td class=\"n\">\(c[.perUser])</td><td class=\"n\">\(c[.perProcess])</td><td class=\"n\">\(c[.none])</td></tr></table>"
        return s
    }

    static func objectList(_ snapshot: ContextSnapshot) -> String {
        var items: [String] = []
        for d in snapshot.devices {
            let attached = d.attachments.map { "\($0.pasid.map { "PASID \($0)" } ?? "RID") → HWPT #\($0.hwpt)" }
            items.append("<b>device #\(d.id)</b> (\(HTML.escape(d.model))\(d.boundByDriver ? ", bound by its driver" : "")): \(attached.isEmpty ? "not attached" : attached.joined(separator: ", "))")
        }
        for h in snapshot.hwpts {
            var text: String
            switch h.kind {
            case .paging(let i): text = "<b>HWPT #\(h.id)</b> paging on IOAS #\(i)"
            case .nested(let p, let v): text = "<b>HWPT #\(h.id)</b> nested on HWPT #\(p)" + (v.map { " via vIOMMU #\($0)" } ?? "")
            case .sva(let pid): text = "<b>HWPT #\(h.id)</b> SVA of process \(pid)"
            }
            var flags: [String] = []
            if h.isAutoDomain { flags.append("automatic domain") }
            if h.isNestParent { flags.append("nest parent") }
            if h.pasidCompatible { flags.append("PASID-compatible") }
            if h.dirtyTracking { flags.append("dirty tracking") }
            if let f = h.faultQueue { flags.append("faults to queue #\(f)") }
            if !flags.isEmpty { text += " (" + flags.joined(separator: ", ") + ")" }
            items.append(text)
        }
        for v in snapshot.viommus { items.append("<b>vIOMMU #\(v.id)</b> type \(v.type) over HWPT #\(v.parent)") }
        for v in snapshot.vdevices { items.append("<b>vDevice #\(v.id)</b>: device #\(v.device) as virtual ID \(HTML.hex(v.virtualID)) in vIOMMU #\(v.viommu)") }
        for a in snapshot.accesses { items.append("<b>access #\(a.id)</b> on \(a.ioas.map { "IOAS #\($0)" } ?? "no IOAS"), \(a.pinned.count) pinned span\(a.pinned.count == 1 ? "" : "s")") }
        for q in snapshot.faultQueues { items.append("<b>fault queue #\(q.id)</b>: \(q.pending) group\(q.pending == 1 ? "" : "s") unread, \(q.awaitingResponse) awaiting a response") }
        for q in snapshot.eventQueues { items.append("<b>vEVENT queue #\(q.id)</b> of vIOMMU #\(q.viommu ?? 0): \(q.pending) unread") }
        for q in snapshot.hwQueues { items.append("<b>HW queue #\(q.id)</b> of vIOMMU #\(q.viommu): index \(q.index), IOVA \(HTML.hex(q.base)), \(HTML.size(q.length))") }
        for i in snapshot.ioas { items.append("<b>IOAS #\(i.id)</b>: \(i.areas.count) area\(i.areas.count == 1 ? "" : "s")") }
        for o in snapshot.others { items.append("<b>#\(o.id)</b> \(HTML.escape(o.kind))") }
        guard !items.isEmpty else { return "" }
        return "<ul class=\"objects\">" + items.map { "<li>\($0)</li>" }.joined() + "</ul>"
    }

    /// At most this many areas are listed in a table (all are drawn).
    static let areaRows = 64

    static func areaTable(_ ioas: ContextSnapshot.IOAS) -> String {
        guard !ioas.areas.isEmpty else { return "" }
        var s = "<table class=\"areas\"><tr><th>IOVA</th><th>size</th><th>user address</th><th>access</th><th>source</th></tr>"
        for a in ioas.areas.prefix(areaRows) {
            let access = [a.readable ? "read" : nil, a.writable ? "write" : nil].compactMap { $0 }.joined(separator: "/")
            s += "<tr><td><code>\(HTML.span(a.iova.start, a.iova.last))</code></td><td class=\"n\">\(HTML.size(a.iova.length))</td><td><code>\(HTML.hex(a.userAddress))</code></td><td>\(access)</td><td>\(a.fromFile ? "file" : "user memory")</td></tr>"
        }
        if ioas.areas.count > areaRows { s += "<tr><td colspan=\"5\">… and \(ioas.areas.count - areaRows) more areas</td></tr>" }
        return s + "</table>"
    }

    static func calls(_ rows: [ContextRecorder.CallRow]) -> String {
        guard !rows.isEmpty else { return "<p class=\"note\">No calls.</p>" }
        var s = "<table class=\"calls\"><tr><th>ioctl</th><th>calls</th><th>errors</th><th>total time</th><th>median time</th></tr>"
        for r in rows {
            let errors = r.errors.map { "\(HTML.escape($0.name)) ×\($0.count)" }.joined(separator: ", ")
            s += "<tr><td><code>\(HTML.escape(r.name))</code></td><td class=\"n\">\(r.count)</td><td\(errors.isEmpty ? "" : " class=\"err\"")>\(errors.isEmpty ? "–" : errors)</td>"
            s += "<td class=\"n\">\(HTML.duration(r.totalNanoseconds))</td><td class=\"n\">\(HTML.duration(r.medianNanoseconds))</td></tr>"
        }
        let count = rows.reduce(0) { $0 + $1.count }
        let errors = rows.reduce(0) { $0 + $1.errors.reduce(0) { $0 + $1.count } }
        let total = rows.reduce(UInt64(0)) { $0 &+ $1.totalNanoseconds }
        s += "<tr class=\"total\"><td>all</td><td class=\"n\">\(count)</td><td>\(errors) failed</td><td class=\"n\">\(HTML.duration(total))</td><td></td></tr>"
        return s + "</table>"
    }

    static let style = """
        body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;color:#1d2330;background:#fff;max-width:1100px}\
        h1{font-size:24px;margin:0 0 6px}h2{font-size:19px;border-bottom:2px solid #d5dbe6;padding-bottom:4px;margin-top:28px}\
        h3{font-size:16px;margin:18px 0 6px;color:#2b3a55}h4{font-size:14px;margin:14px 0 4px}\
        .sub{font-weight:normal;color:#5b6577;font-size:14px}.meta{color:#3d4656;margin:4px 0}.note{color:#6b7485;font-style:italic}\
        code{font:12.5px "DejaVu Sans Mono",monospace}\
        table{border-collapse:collapse;margin:6px 0 10px}th,td{border:1px solid #d5dbe6;padding:3px 8px;text-align:left}\
        th{background:#eef2f8;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}td.err{color:#a4262c}\
        tr.total td{font-weight:600;background:#f6f8fb}\
        .moment{border-left:4px solid #c9d6ea;padding-left:12px;margin:10px 0}\
        ul.objects{margin:6px 0;padding-left:20px;columns:2;column-gap:28px}\
        svg{display:block;margin:6px 0;overflow:visible}\
        svg text{font:11px "DejaVu Sans",sans-serif;fill:#1d2330}svg text.tick{font:9px "DejaVu Sans Mono",monospace;fill:#4a5466}\
        svg text.rowlabel{font-weight:600}svg text.note{fill:#6b7485;font-style:italic}\
        rect.area{fill:#3b78d8}rect.area.file{fill:#1f4f9a}rect.hole{fill:#eef0f3;stroke:#c8ccd4;stroke-width:.5}\
        rect.reserved{fill:#d64545;fill-opacity:.75}rect.allowed{fill:#3aa35b}\
        line.axis{stroke:#4a5466}line.tick{stroke:#b9c0cc;stroke-width:.6;stroke-dasharray:2 2}\
        path.edge{fill:none;stroke:#555;stroke-width:1.3}text.edgelabel{font-size:10px;font-weight:600;fill:#5b3c88;paint-order:stroke;stroke:#fff;stroke-width:3px}\
        g.node rect{stroke:#33415c;stroke-width:1}text.nodetitle{font-weight:600}text.nodedetail{font-size:10px;fill:#3d4656}\
        g.device rect{fill:#fde9c8}g.access rect{fill:#f9d8e8}g.other rect{fill:#eeeeee}g.vdevice rect{fill:#efe1fb}\
        g.hwpt rect{fill:#d9ebff}g.nested rect{fill:#e2f3e4}g.viommu rect{fill:#f1e2fb}g.ioas rect{fill:#c7dcfb}g.queue rect{fill:#fff6c9}\
        .key{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;color:#fff}\
        .key.area{background:#3b78d8}.key.file{background:#1f4f9a}.key.hole{background:#eef0f3;color:#333;border:1px solid #c8ccd4}\
        .key.reserved{background:#d64545}.key.allowed{background:#3aa35b}
        """
}
