// The IOASID layer's ioctls (include/ioasid/ioasid.h): layouts against the shipped header, and
// behaviour through IOMMUFile.ioctl.
import CIOASIDSys
import Foundation
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSets
import IOASIDTestDriver
import Testing

@Suite("IOASID layer ioctls")
struct IOASIDABITests {
    static let header = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("include")

    /// Every Swift struct and request equals what a C compiler makes of include/ioasid/ioasid.h,
    /// and every struct of the header has a Swift mirror.
    @Test func layoutsMatchTheShippedHeader() throws {
        let headerText = try String(contentsOf: Self.header.appendingPathComponent("ioasid/ioasid.h"), encoding: .utf8)
        let declared = Set(headerText.split(separator: "\n").compactMap { line -> String? in
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("struct "), t.hasSuffix("{") else { return nil }
            return String(t.dropFirst(7).dropLast().trimmingCharacters(in: .whitespaces))
        })
        let mirrored = Set(IOASIDUAPI.structTypes.map { $0.cName })
        #expect(declared == mirrored, "header structs \(declared.sorted()) vs Swift \(mirrored.sorted())")

        var program = "#include <stdio.h>\n#include <stddef.h>\n#include <ioasid/ioasid.h>\nint main(void) {\n"
        var expected: [String] = []
        for type in IOASIDUAPI.structTypes {
            let n = type.cName
            program += "  printf(\"\(n) %zu\\n\", sizeof(struct \(n)));\n"
            expected.append("\(n) \(type.byteSize)")
            for f in type.layoutFields {
                program += "  printf(\"\(n).\(f.name) %zu %zu\\n\", offsetof(struct \(n), \(f.name)), sizeof(((struct \(n) *)0)->\(f.name)));\n"
                expected.append("\(n).\(f.name) \(f.offset) \(f.size)")
            }
        }
        for (name, request) in IOASIDUAPI.allRequests {
            program += "  printf(\"\(name) %lu\\n\", (unsigned long)\(name));\n"
            expected.append("\(name) \(request)")
        }
        program += "  return 0;\n}\n"
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("ioasid-header-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        try program.write(to: work.appendingPathComponent("m.c"), atomically: true, encoding: .utf8)
        let exe = work.appendingPathComponent("m").path
        let build = try runProcess(["cc", "-Wall", "-Werror", "-I", Self.header.path, "-o", exe, work.appendingPathComponent("m.c").path])
        try #require(build.status == 0, "compiling against ioasid.h failed: \(build.output)")
        let run = try runProcess([exe])
        #expect(run.output.split(separator: "\n").map(String.init) == expected)
    }

    /// Set and PASID allocation, authorization of PASID attach, free detaching, and the close.
    @Test func allocateAuthorizeFreeAndClose() throws {
        let (vm1, host1) = makeFile()
        let (vm2, host2) = makeFile()
        defer { host1.closeAll(); host2.closeAll(); vm2.release() }
        var info = ioasid_set_info()
        #expect(vm1.call(IOASIDUAPI.IOASID_SET_INFO, &info) == -2, "no set yet: ENOENT")
        var pa = ioasid_pasid_alloc()
        pa.min = 1
        #expect(vm1.call(IOASIDUAPI.IOASID_PASID_ALLOC, &pa) == -2)

        var sa = ioasid_set_alloc()
        sa.flags = IOASIDUAPI.IOASID_SET_OWNER_VM
        sa.quota = 2
        sa.vm_id = 0x1000 + UInt64(getpid())
        #expect(vm1.call(IOASIDUAPI.IOASID_SET_ALLOC, &sa) == 0)
        let set1 = IOASIDSetID(rawValue: sa.out_set_id)
        #expect(vm1.call(IOASIDUAPI.IOASID_SET_ALLOC, &sa) == -17, "one set per file: EEXIST")
        var unlimited = ioasid_set_alloc()
        unlimited.flags = IOASIDUAPI.IOASID_SET_UNLIMITED
        if ioasid_sys_has_capability(21) == 0 {
            #expect(vm2.call(IOASIDUAPI.IOASID_SET_ALLOC, &unlimited) == -1, "unlimited needs privilege: EPERM")
        }
        // With privilege (or as root here) an unlimited set is allowed; quota must then be 0.
        let (root, _) = makeFile(configuration: { $0.privileged = true })
        unlimited.quota = 1
        #expect(root.call(IOASIDUAPI.IOASID_SET_ALLOC, &unlimited) == -22, "unlimited with a quota: EINVAL")
        unlimited.quota = 0
        #expect(root.call(IOASIDUAPI.IOASID_SET_ALLOC, &unlimited) == 0)
        root.release()
        var sa2 = ioasid_set_alloc()
        sa2.quota = 4
        #expect(vm2.call(IOASIDUAPI.IOASID_SET_ALLOC, &sa2) == 0)

        pa.flags = IOASIDUAPI.IOASID_PASID_ALLOC_GUEST_ID
        pa.guest_pasid = 9
        #expect(vm1.call(IOASIDUAPI.IOASID_PASID_ALLOC, &pa) == 0)
        let mine = pa.out_pasid
        #expect(try IOASIDHost.layer.allocator.hostPASID(forPrivateID: 9, in: set1) == mine)
        var pb = ioasid_pasid_alloc()
        pb.min = 1
        #expect(vm2.call(IOASIDUAPI.IOASID_PASID_ALLOC, &pb) == 0)
        let theirs = pb.out_pasid
        #expect(mine != theirs)

        info = ioasid_set_info()
        #expect(vm1.call(IOASIDUAPI.IOASID_SET_INFO, &info) == 0)
        #expect(info.out_set_id == set1.rawValue && info.out_quota == 2 && info.out_count == 1)
        #expect(info.out_flags == IOASIDUAPI.IOASID_SET_OWNER_VM && info.out_pasid_bits == 20)

        // Attach through the core: only vm1's own PASID is accepted.
        let driver = try #require(vm1.testDriver)
        let ioas = try vm1.context.allocateIOAS()
        let (handle, _, device) = try driver.mockDomain(ioas.object, flags: Mock.devicePASID)
        let hwpt = try vm1.context.allocateHWPT(device: device, parent: ioas.object, flags: [.pasid], data: nil)
        _ = try driver.mockDomainReplace(handle, with: hwpt.object)
        #expect(throws: IOMMUError.self) { _ = try driver.pasidAttach(handle, pasid: theirs, to: hwpt.object) }
        do { _ = try driver.pasidAttach(handle, pasid: theirs, to: hwpt.object) } catch { #expect(error.errno == 1) }
        _ = try driver.pasidAttach(handle, pasid: mine, to: hwpt.object)
        try driver.pasidCheck(handle, pasid: mine, hwpt: hwpt.object)

        var free = ioasid_pasid_free()
        free.pasid = theirs
        #expect(vm1.call(IOASIDUAPI.IOASID_PASID_FREE, &free) == -1, "another set's PASID: EPERM")
        free.pasid = mine
        #expect(vm1.call(IOASIDUAPI.IOASID_PASID_FREE, &free) == 0)
        try driver.pasidCheck(handle, pasid: mine, hwpt: ObjectID(0))  // detached from the device
        #expect(vm1.call(IOASIDUAPI.IOASID_PASID_FREE, &free) == -2)

        // Quota 2: the third allocation is ENOSPC.
        pa = ioasid_pasid_alloc(); pa.min = 1
        #expect(vm1.call(IOASIDUAPI.IOASID_PASID_ALLOC, &pa) == 0)
        #expect(vm1.call(IOASIDUAPI.IOASID_PASID_ALLOC, &pa) == 0)
        #expect(vm1.call(IOASIDUAPI.IOASID_PASID_ALLOC, &pa) == -28)

        // The last close frees the set's PASIDs and the set.
        vm1.release()
        #expect(throws: IOMMUError.self) { _ = try IOASIDHost.layer.allocator.setInfo(set1) }
    }

    /// The real kernel has no such requests: the numbers must not collide with iommufd's.
    @Test func numbersLieOutsideIommufdsRange() {
        for (_, r) in IOASIDUAPI.allRequests {
            #expect(IOCTL._IOC_TYPE(r) == IOCTL.IOMMUFD_TYPE)
            #expect(IOCTL._IOC_NR(r) >= 0xc0)
            #expect(!IOCTL.all.contains { $0.request == r })
        }
    }
}
