// The checksum engine of Examples/custom-device as a Swift model on the software machine, without
// a program: its refused DMA is the IOMMU's fault, recorded by the IOMMU itself.
import ChecksumDevice
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

@Suite struct ChecksumDeviceModelTests {
    /// Plugs a checksum engine behind the software VT-d unit with memory and bus mastering on.
    static func plugged() throws -> (machine: SoftMachine, slot: PCIDeviceSlot) {
        let machine = SoftMachine()
        let plugged = try machine.plugVTd(ChecksumDevice(), requesterID: RequesterID(bus: 0, device: 3, function: 0))
        plugged.slot.configWrite(0x04, size: 2, value: 0x6)
        return (machine, plugged.slot)
    }

    @Test func aDMAOfAnUnattachedDeviceIsTheIOMMUsFault() throws {
        let (machine, slot) = try Self.plugged()
        slot.barWrite(0, offset: ChecksumDevice.Register.source, size: 8, value: 0x1234_5000)
        slot.barWrite(0, offset: ChecksumDevice.Register.length, size: 4, value: 64)
        slot.barWrite(0, offset: ChecksumDevice.Register.doorbell, size: 8, value: 1)
        let status = slot.barRead(0, offset: ChecksumDevice.Register.status, size: 8)
        #expect(status == ChecksumDevice.statusDone | ChecksumDevice.statusError | UInt64(ChecksumDevice.Error.sourceFault.rawValue) << 8)
        #expect(slot.barRead(0, offset: ChecksumDevice.Register.faultAddress, size: 8) == 0x1234_5000)
        let info = slot.barRead(0, offset: ChecksumDevice.Register.faultInfo, size: 8)
        #expect(info & 0xffff == 0x18 && info >> 16 & 1 == 0)
        // The VT-d unit recorded the same request in its fault recording registers.
        let unit = try #require(machine.vtd).unit
        let faultStatus = UInt32(unit.readRegister(VTdRegister.faultStatus))
        #expect(faultStatus & VTdFaultStatus.primaryPendingFault != 0)
        let index = VTdFaultStatus.faultRecordIndex(faultStatus)
        let record = VTdFaultRecord(low: unit.readRegister(0x400 + 16 * index), high: unit.readRegister(0x408 + 16 * index))
        #expect(record.isFault && record.sourceID == 0x18 && record.faultInfo == 0x1234_5000, "\(record)")
        #expect(record.requestType == .read)
    }

    @Test func registersAreReadAndWrittenByHalvesAndResetClearsThem() throws {
        let (_, slot) = try Self.plugged()
        #expect(slot.barRead(0, offset: ChecksumDevice.Register.id, size: 8) == ChecksumDevice.idValue)
        #expect(slot.barRead(0, offset: ChecksumDevice.Register.id + 4, size: 4) == ChecksumDevice.idValue >> 32)
        slot.barWrite(0, offset: ChecksumDevice.Register.source, size: 4, value: 0xdead_beef)
        slot.barWrite(0, offset: ChecksumDevice.Register.source + 4, size: 4, value: 0x1)
        #expect(slot.barRead(0, offset: ChecksumDevice.Register.source, size: 8) == 0x1_dead_beef)
        // A zero length is refused before any DMA.
        slot.barWrite(0, offset: ChecksumDevice.Register.doorbell, size: 4, value: 1)
        #expect(slot.barRead(0, offset: ChecksumDevice.Register.status, size: 8) >> 8 == UInt64(ChecksumDevice.Error.badLength.rawValue))
        slot.model.reset()
        #expect(slot.barRead(0, offset: ChecksumDevice.Register.source, size: 8) == 0)
        #expect(slot.barRead(0, offset: ChecksumDevice.Register.status, size: 8) == 0)
    }
}
