import CZlib
import Foundation
import Testing

// `ioasid run --report` end to end: a program runs under the built launcher, its report is opened
// in a real headless browser (Debian's `chromium`), which takes a screenshot and dumps the DOM;
// the page must render (the PNG is far from blank and shows the areas' colour) and carry the
// expected text. Without chromium the suite is skipped locally; in CI (CI set) it fails instead,
// since .ci/run installs chromium.

@Suite(.enabled(if: BuiltProducts.available && (Chromium.path != nil || Chromium.required),
                "needs `swift build` products, `cc`, and chromium (apt-get install chromium)"))
struct ReportBrowserTests {
    @Test func fixtureReportRendersInTheBrowser() throws {
        let chromium = try #require(Chromium.path, "chromium is not installed (apt-get install chromium)")
        let fixtures = try Fixtures.shared.get()
        let dir = try temporaryDirectory()
        let report = dir + "/fixture.html"
        let outcome = try runUnderIOASID(["--report=\(report)", "--", fixtures.iommu])
        #expect(outcome.exited(0), "\(outcome)")
        let page = try String(contentsOfFile: report, encoding: .utf8)
        #expect(page.contains("/dev/iommu open #1"))
        #expect(page.contains("ENOTTY"), "the fixture's unknown ioctls fail with ENOTTY")
        let render = try Chromium.render(chromium, page: report, in: dir)
        #expect(render.dom.contains("ioasid report"))
        #expect(render.image.luminanceStandardDeviation > 8, "the screenshot is nearly blank: \(render.image.summary)")
    }

    /// The VMM example (Examples/vmm/vmm.c) under `ioasid run --report`: the picture in docs/.
    /// Set IOASID_REPORT_SCREENSHOT to a path to keep the screenshot (1200 x 2400).
    @Test func vmmExampleReportRendersInTheBrowser() throws {
        let chromium = try #require(Chromium.path, "chromium is not installed (apt-get install chromium)")
        let dir = try temporaryDirectory()
        let vmm = try VMMExample.build(into: dir)
        let report = dir + "/vmm.html"
        let outcome = try runUnderIOASID(["--report=\(report)", "--", vmm])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("all steps passed"))
        let page = try String(contentsOfFile: report, encoding: .utf8)
        let render = try Chromium.render(chromium, page: report, in: dir, height: 2400)
        if let keep = ProcessInfo.processInfo.environment["IOASID_REPORT_SCREENSHOT"], !keep.isEmpty {
            try? FileManager.default.removeItem(atPath: keep)
            try FileManager.default.copyItem(atPath: render.screenshot, toPath: keep)
        }
        // What the VMM did, as text in the rendered DOM.
        for marker in ["At its fullest", "Closed, when it was closed", "IOAS #1", "IOMMU_IOAS_MAP_FILE", "IOMMU_HWPT_ALLOC",
                       "nested", "PASID", "fault queue", "pinned pages", "piecewise logarithmic scale", "area from a file"] {
            #expect(render.dom.contains(marker), "the rendered page lacks \(marker)")
        }
        #expect(page.contains("<title>area: IOVA "), "areas carry their span on hover")
        // It rendered: far from blank, and the areas' colour (#1f4f9a, file-backed) is on screen.
        #expect(render.image.luminanceStandardDeviation > 8, "the screenshot is nearly blank: \(render.image.summary)")
        #expect(render.image.pixels(near: (0x1f, 0x4f, 0x9a)) > 50, "no file-backed area drawn: \(render.image.summary)")
    }

    private func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-report-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// Debian's headless browser.
enum Chromium {
    static let path: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    /// In CI the browser must be there (.ci/run installs it).
    static let required = !(ProcessInfo.processInfo.environment["CI"] ?? "").isEmpty

    struct Render {
        var screenshot: String
        var image: PNGImage
        var dom: String
    }

    /// Screenshots `page` (a window `width` x `height`) and dumps its DOM after layout.
    static func render(_ chromium: String, page: String, in dir: String, width: Int = 1200, height: Int = 1600) throws -> Render {
        let screenshot = dir + "/screenshot.png"
        let common = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--user-data-dir=\(dir)/profile"]
        let shot = try run(chromium, arguments: common + ["--screenshot=\(screenshot)", "--window-size=\(width),\(height)",
                                                          "file://\(page)"])
        #expect(shot.exited(0), "\(shot)")
        let dump = try run(chromium, arguments: common + ["--dump-dom", "file://\(page)"])
        #expect(dump.exited(0), "\(dump)")
        let image = try PNGImage(bytes: [UInt8](try Data(contentsOf: URL(fileURLWithPath: screenshot))))
        #expect(image.width == width && image.height == height)
        return Render(screenshot: screenshot, image: image, dom: dump.standardOutput)
    }
}

/// The VMM example compiled with the Linux 7.2 uapi headers (fetched as scripts/example.sh does).
enum VMMExample {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func build(into dir: String) throws -> String {
        let fetch = try run(root.path + "/scripts/fetch-linux-source.sh", arguments: ["--quiet"])
        let source = fetch.standardOutput.split(separator: "\n").last.map(String.init) ?? ""
        let uapi = source + "/include/uapi/linux/iommufd.h", test = source + "/drivers/iommu/iommufd/iommufd_test.h"
        guard fetch.exited(0), FileManager.default.fileExists(atPath: uapi), FileManager.default.fileExists(atPath: test) else {
            try Test.cancel("skipped: the Linux source could not be fetched (\(fetch.standardError.suffix(200)))")
        }
        let headers = dir + "/include"
        try FileManager.default.createDirectory(atPath: headers + "/linux", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: uapi, toPath: headers + "/linux/iommufd.h")
        try FileManager.default.copyItem(atPath: test, toPath: headers + "/iommufd_test.h")
        let output = dir + "/vmm"
        let cc = try #require(Fixtures.compiler)
        let compiled = try run(cc, arguments: ["-O2", "-Wall", "-isystem", headers, "-o", output, root.path + "/Examples/vmm/vmm.c"])
        #expect(compiled.exited(0), "\(compiled)")
        return output
    }
}

/// An 8-bit RGB or RGBA PNG, decoded (zlib inflate, then the five row filters).
struct PNGImage {
    var width = 0, height = 0, channels = 0
    var pixels: [UInt8] = []

    struct Invalid: Error, CustomStringConvertible { var description: String }

    init(bytes: [UInt8]) throws {
        guard bytes.count > 8, bytes[0..<8].elementsEqual([137, 80, 78, 71, 13, 10, 26, 10]) else { throw Invalid(description: "not a PNG") }
        func be32(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
        var at = 8
        var compressed: [UInt8] = []
        while at + 8 <= bytes.count {
            let length = be32(at), type = String(decoding: bytes[at + 4..<at + 8], as: UTF8.self)
            let data = at + 8
            guard data + length <= bytes.count else { throw Invalid(description: "truncated chunk") }
            switch type {
            case "IHDR":
                width = be32(data); height = be32(data + 4)
                guard bytes[data + 8] == 8, bytes[data + 12] == 0 else { throw Invalid(description: "not 8-bit, or interlaced") }
                switch bytes[data + 9] {
                case 2: channels = 3
                case 6: channels = 4
                default: throw Invalid(description: "colour type \(bytes[data + 9])")
                }
            case "IDAT": compressed += bytes[data..<data + length]
            default: break
            }
            at = data + length + 4
        }
        let stride = width * channels
        var raw = [UInt8](repeating: 0, count: height * (stride + 1))
        var rawLength = uLongf(raw.count)
        let status = raw.withUnsafeMutableBufferPointer { out in
            compressed.withUnsafeBufferPointer { uncompress(out.baseAddress, &rawLength, $0.baseAddress, uLong($0.count)) }
        }
        guard status == Z_OK, Int(rawLength) == raw.count else { throw Invalid(description: "inflate failed (\(status))") }
        pixels = [UInt8](repeating: 0, count: height * stride)
        for y in 0..<height {
            let filter = raw[y * (stride + 1)]
            for x in 0..<stride {
                let value = Int(raw[y * (stride + 1) + 1 + x])
                let a = x >= channels ? Int(pixels[y * stride + x - channels]) : 0
                let b = y > 0 ? Int(pixels[(y - 1) * stride + x]) : 0
                let c = x >= channels && y > 0 ? Int(pixels[(y - 1) * stride + x - channels]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                case 4:
                    let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                    predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c
                default: throw Invalid(description: "row filter \(filter)")
                }
                pixels[y * stride + x] = UInt8((value + predictor) & 0xff)
            }
        }
    }

    /// The standard deviation of the pixels' luminance (0...255); about 0 for a blank page.
    var luminanceStandardDeviation: Double {
        var sum = 0.0, squares = 0.0
        let count = width * height
        for i in 0..<count {
            let p = i * channels
            let l = 0.299 * Double(pixels[p]) + 0.587 * Double(pixels[p + 1]) + 0.114 * Double(pixels[p + 2])
            sum += l
            squares += l * l
        }
        let mean = sum / Double(count)
        return (squares / Double(count) - mean * mean).squareRoot()
    }

    /// How many pixels are within 12 of `colour` on each channel.
    func pixels(near colour: (UInt8, UInt8, UInt8)) -> Int {
        var n = 0
        for i in 0..<(width * height) {
            let p = i * channels
            if abs(Int(pixels[p]) - Int(colour.0)) <= 12, abs(Int(pixels[p + 1]) - Int(colour.1)) <= 12,
               abs(Int(pixels[p + 2]) - Int(colour.2)) <= 12 { n += 1 }
        }
        return n
    }

    var summary: String {
        "\(width)x\(height), \(channels) channels, luminance deviation \(luminanceStandardDeviation)"
    }
}
