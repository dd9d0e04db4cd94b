import Foundation
import Testing

// Discovery like a real machine: device nodes and the sysfs view under `ioasid run`, checked
// from a C program (Tests/Fixtures/discovery.c), and `ioasid devices` against the built binary.

@Suite(.enabled(if: BuiltProducts.available, "needs `swift build` products next to the test bundle and `cc`"))
struct DiscoveryTests {
    @Test func nodesAndSysfsOfAModelledMachine() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID(["--machine", "vtd:2,mock", "--", fixtures.discovery])
        #expect(outcome.exited(0), "\(outcome)")
        outcome.expectOK(["/dev/iommu is character device 10:257", "/dev/vfio lists the machine's nodes",
                          "sysfs view of each device", "cdev numbers match vfio-dev/vfioN/dev",
                          "2 VFs with their own addresses, groups and cdevs", "sriov_numvfs errors and removal",
                          "sriov_numvfs through stdio"])
        #expect(outcome.standardOutput.hasSuffix("discovery ok\n"), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok /dev/vfio/vfio is character device 10:196, open or not\n"), "\(outcome)")
    }

    @Test func iommuNodeWithoutAMachine() throws {
        let fixtures = try Fixtures.shared.get()
        let outcome = try runUnderIOASID([fixtures.discovery, "nodes-only"])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(outcome.standardOutput.contains("ok /dev/iommu is character device 10:257\n"), "\(outcome)")
    }

    @Test func theSysfsFolderIsRemovedWhenTheProgramExits() throws {
        let fixtures = try Fixtures.shared.get()
        let root = fixtures.directory + "/testbed-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let outcome = try runUnderIOASID(["--machine", "vtd:2,mock", "--", fixtures.discovery],
                                         environment: ["IOASID_TESTBED_ROOT": root])
        #expect(outcome.exited(0), "\(outcome)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root) == [])
    }

    // MARK: ioasid devices

    @Test func devicesListsEachDeviceLikeLspci() throws {
        let outcome = try run(BuiltProducts.directory + "/ioasid", arguments: ["devices", "--machine", "vtd:ioat,smmuv3:2,mock"])
        #expect(outcome.exited(0), "\(outcome)")
        let expected = """
            0100:00:01.0 System peripheral [0880]: Intel I/OAT DMA engine [8086:2021] (rev 04) kind=ioat iommu=vtd group=0 cdev=vfio0 caps=msix,pcie,pm
            0100:00:02.0 Unassigned class [ff00]: ioasid PCI function [1b36:00f0] (rev 01) kind=pci iommu=smmuv3 group=1 cdev=vfio1 caps=pm,msi,msix,pcie,pasid,ats,pri,sriov totalvfs=7
            0100:00:03.0 Unassigned class [ff00]: ioasid PCI function [1b36:00f0] (rev 01) kind=pci iommu=smmuv3 group=2 cdev=vfio2 caps=pm,msi,msix,pcie,pasid,ats,pri,sriov totalvfs=7
            0100:00:04.0 Unassigned class [ff00]: ioasid mock device [1b36:00f0] (rev 01) kind=mock iommu=mock group=3 cdev=vfio3 caps=pcie,pasid

            """
        #expect(outcome.standardOutput == expected, "\(outcome)")
        #expect(outcome.standardError.isEmpty)
    }

    @Test(arguments: ["foo", "vtd:x", "vtd:0", ""])
    func devicesRefusesABadSpecification(_ spec: String) throws {
        let outcome = try run(BuiltProducts.directory + "/ioasid", arguments: ["devices", "--machine", spec])
        #expect(outcome.exited(2), "\(outcome)")
        #expect(outcome.standardError.contains("--machine:"), "\(outcome)")
        #expect(outcome.standardOutput.isEmpty)
    }
}
