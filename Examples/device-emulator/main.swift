// A device emulator in Swift on the software IOMMU, without ioctls: build a machine, give a
// device an address space, DMA into it, take an I/O page fault and answer it.
//
//   swift run device-emulator
import IOASIDProcessMemory
import IOASIDCore
import IOASIDLinuxABI  // ProcessMemory: this process's memory as the context's user memory
import IOASIDSoftDrivers
import IOASIDSoftIOMMU

#if canImport(Glibc)
import Glibc
#endif

func step(_ text: String) { print("• " + text) }

do {
    // The machine: a VT-d unit with one PCI function (20-bit PASIDs, ATS, PRI).
    let machine = SoftMachine(vtdDelivery: .interruptThread)
    let nic = try machine.addVTdDevice()
    step("machine: VT-d unit, device \(nic.function.requesterID) with PASID, ATS and PRI")

    // The owner (a VMM): one context, the device bound to it, guest RAM in an IOAS.
    let context = Context(memory: ProcessMemory.shared)
    defer { context.close() }
    let device = try context.bind(nic)
    let info = try context.hardwareInfo(device)
    step("bound as device \(device.rawValue); hardware info type \(info.type) (1 = Intel VT-d), max PASID log2 \(info.maxPASIDLog2)")

    let ram = UnsafeMutableRawPointer.allocate(byteCount: 8 * 4096, alignment: 4096)
    defer { ram.deallocate() }
    ram.initializeMemory(as: UInt8.self, repeating: 0, count: 8 * 4096)
    let ioas = try context.allocateIOAS()
    let base: UInt64 = 0x4000_0000
    _ = try context.map(ioas, source: .user(address: UInt64(UInt(bitPattern: ram))), length: 4 * 4096, iova: base, access: .readWrite)

    // A HWPT with a fault queue, so page requests reach us.
    let faults = try context.allocateFaultQueue()
    let hwpt = try context.allocateHWPT(device: device, parent: ioas.object, flags: [.faultIDValid], data: nil, faultQueue: faults.objectID)
    _ = try context.attach(device, to: hwpt.object)
    step("IOAS maps 16 KiB of guest RAM at IOVA 0x\(String(base, radix: 16)); HWPT \(hwpt.rawValue) with fault queue attached")

    // DMA: the bytes land in guest RAM.
    let message = Array("hello from the device".utf8)
    guard case .completed = nic.function.write(address: base + 0x100, bytes: message) else { fatalError("DMA failed") }
    let landed = String(decoding: UnsafeRawBufferPointer(start: ram + 0x100, count: message.count), as: UTF8.self)
    step("device DMA-writes at IOVA 0x\(String(base + 0x100, radix: 16)): guest RAM now reads \"\(landed)\"")

    // An I/O page fault: the device touches an unmapped page; it sends a page request and waits.
    let target = base + 6 * 4096
    guard case .waitingForPageResponse(let pending) = nic.function.write(address: target, bytes: [0x42]) else {
        fatalError("expected a page request")
    }
    step("device DMA-writes at IOVA 0x\(String(target, radix: 16)) (not mapped): it sends a page request and waits")
    var records: [PageFaultRecord] = []
    for _ in 0..<2000 where records.isEmpty {
        records = try context.readFaults(faults, maxRecords: 8)
        if records.isEmpty { usleep(1000) }
    }
    guard let fault = records.first else { fatalError("no fault arrived") }
    step("owner reads the fault queue: address 0x\(String(fault.address, radix: 16)), cookie \(fault.cookie)")

    // The owner maps the page and answers; the device retries.
    _ = try context.map(ioas, source: .user(address: UInt64(UInt(bitPattern: ram)) + 6 * 4096), length: 4096, iova: target, access: .readWrite)
    try context.respond(faults, cookie: fault.cookie, code: 0)
    for _ in 0..<2000 where !nic.function.isAnswered(pending) { usleep(1000) }
    guard case .completed = nic.function.resume(pending) else { fatalError("the retry failed") }
    step("owner maps the page and responds success; the device retries: guest RAM byte = 0x\(String(ram.load(fromByteOffset: 6 * 4096, as: UInt8.self), radix: 16))")

    // Unmap: the IOTLB and the device's ATC are flushed before unmap returns; DMA is blocked.
    _ = try context.unmap(ioas, iova: base, length: 4 * 4096)
    if case .completed = nic.function.read(address: base + 0x100, count: 4) { fatalError("read through an unmapped IOVA") }
    step("after unmap the device can no longer reach IOVA 0x\(String(base + 0x100, radix: 16))")
} catch {
    print("error: \(error)")
    exit(1)
}
