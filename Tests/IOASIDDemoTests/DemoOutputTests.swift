// `ioasid demo`'s two outputs: the text stays as it was (byte for byte), and the JSON carries
// values, not display strings, in the layout docs/demo.schema.json describes.
import Foundation
import IOASIDDemo
import Testing

@Suite struct DemoOutputTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The text report equals the recorded output of `ioasid demo` (Tests/Fixtures/demo-output.txt).
    @Test func theTextIsUnchanged() throws {
        let expected = try String(contentsOf: Self.root.appendingPathComponent("Tests/Fixtures/demo-output.txt"), encoding: .utf8)
        let report = pinsUserMemory { Demo.run() }
        let text = report.text()
        #expect(text == expected)
        if text != expected {
            let a = text.split(separator: "\n", omittingEmptySubsequences: false)
            let b = expected.split(separator: "\n", omittingEmptySubsequences: false)
            if let i = zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
                Issue.record("first difference, line \(i + 1):\n  got      \(a[i])\n  expected \(b[i])")
            }
        }
    }

    @Test func theSummaryIsStructuredInJSON() throws {
        let report = pinsUserMemory { Demo.run() }
        let object = try #require(try JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any])
        #expect(object["version"] as? Int == 1)
        let vm1 = try #require((object["summary"] as? [[String: Any]])?.first)
        #expect(vm1["set"] as? Int == 1)
        let quota = try #require(vm1["quota"] as? [String: Any])
        #expect(quota["used"] as? Int == 2 && quota["limit"] as? Int == 2)
        let pasids = try #require(vm1["pasids"] as? [[String: Any]])
        #expect(pasids.map { $0["host"] as? Int } == [1, 6])
        #expect(pasids.map { $0["guest"] as? Int } == [7, 6])
        let devices = try #require(vm1["devices"] as? [[String: Any]])
        #expect(devices.map { $0["name"] as? String } == ["vf0"])
    }

    @Test func theJSONMatchesItsSchema() throws {
        let schemaData = try Data(contentsOf: Self.root.appendingPathComponent("docs/demo.schema.json"))
        let schema = try #require(try JSONSerialization.jsonObject(with: schemaData) as? [String: Any])
        let report = pinsUserMemory { Demo.run() }
        let json = try JSONSerialization.jsonObject(with: Data(report.json().utf8))
        let problems = JSONSchemaCheck.problems(json, against: schema)
        #expect(problems.isEmpty, "\(problems.prefix(10))")
    }

    /// The checker is not vacuous: it finds what the schema forbids.
    @Test func theSchemaCheckRejectsDisplayStrings() throws {
        let schemaData = try Data(contentsOf: Self.root.appendingPathComponent("docs/demo.schema.json"))
        let schema = try #require(try JSONSerialization.jsonObject(with: schemaData) as? [String: Any])
        let row: [String: Any] = ["actor": "vm1", "model": "m", "set": "set#1", "quota": "2/2", "pasids": "1←g7",
                                  "devices": [["name": "vf0", "extra": 1]], "dmaCompleted": 1, "dmaBlocked": -1, "faultsAnswered": 0]
        let bad: [String: Any] = ["version": 1, "allAsExpected": true, "events": [["step": 1]], "summary": [row]]
        let problems = JSONSchemaCheck.problems(bad, against: schema)
        for path in ["$.summary[0].set", "$.summary[0].quota", "$.summary[0].pasids", "$.summary[0].devices[0].extra",
                     "$.summary[0].dmaBlocked", "$.events[0].actor"] {
            #expect(problems.contains { $0.hasPrefix(path + ":") }, "\(path) not reported in \(problems)")
        }
    }
}

/// Checks a decoded JSON value against the part of JSON Schema that docs/demo.schema.json uses:
/// `type`, `enum`, `required`, `properties`, `additionalProperties: false`, `items`, `minimum`,
/// `maximum`. Returns one line per violation, `PATH: what`.
enum JSONSchemaCheck {
    static func problems(_ value: Any, against schema: [String: Any], at path: String = "$") -> [String] {
        var out: [String] = []
        if let type = schema["type"] as? String, !has(value, type: type) {
            return ["\(path): not of type \(type)"]
        }
        if let allowed = schema["enum"] as? [Any], !allowed.contains(where: { equal($0, value) }) {
            out.append("\(path): not one of \(allowed)")
        }
        if let number = value as? NSNumber, !isBool(value) {
            if let min = schema["minimum"] as? NSNumber, number.doubleValue < min.doubleValue { out.append("\(path): below \(min)") }
            if let max = schema["maximum"] as? NSNumber, number.doubleValue > max.doubleValue { out.append("\(path): above \(max)") }
        }
        if let object = value as? [String: Any] {
            let properties = schema["properties"] as? [String: Any] ?? [:]
            for key in schema["required"] as? [String] ?? [] where object[key] == nil {
                out.append("\(path).\(key): required but absent")
            }
            for (key, child) in object.sorted(by: { $0.key < $1.key }) {
                if let sub = properties[key] as? [String: Any] {
                    out += problems(child, against: sub, at: "\(path).\(key)")
                } else if schema["additionalProperties"] as? Bool == false {
                    out.append("\(path).\(key): not allowed")
                }
            }
        }
        if let array = value as? [Any], let items = schema["items"] as? [String: Any] {
            for (i, element) in array.enumerated() { out += problems(element, against: items, at: "\(path)[\(i)]") }
        }
        return out
    }

    static func isBool(_ value: Any) -> Bool {
        guard let n = value as? NSNumber else { return false }
        #if canImport(Darwin)
        return CFGetTypeID(n) == CFBooleanGetTypeID()
        #else
        return value is Bool && String(cString: n.objCType) == "c"
        #endif
    }

    static func has(_ value: Any, type: String) -> Bool {
        switch type {
        case "object": return value is [String: Any]
        case "array": return value is [Any]
        case "string": return value is String
        case "boolean": return isBool(value)
        case "integer":
            guard let n = value as? NSNumber, !isBool(value) else { return false }
            return n.doubleValue == n.doubleValue.rounded()
        case "number": return value is NSNumber && !isBool(value)
        case "null": return value is NSNull
        default: return false
        }
    }

    static func equal(_ a: Any, _ b: Any) -> Bool {
        if let x = a as? NSNumber, let y = b as? NSNumber { return x == y && isBool(a) == isBool(b) }
        if let x = a as? String, let y = b as? String { return x == y }
        return false
    }
}
