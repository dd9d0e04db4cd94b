// One I/OAT DMA channel: its registers and its engine.
//
// Software sets CHAINADDR to the first descriptor, then writes DMACOUNT: the number of
// descriptors it has made available since it set CHAINADDR, modulo 2^16 (so appending means
// writing a larger count; Linux keeps a running count, the VFIO selftests' driver writes the
// count of one batch after setting CHAINADDR each time). The engine follows the chain (each
// descriptor's `next`) until it has completed as many descriptors as DMACOUNT says, then goes
// idle; a later, larger DMACOUNT continues from the last descriptor's `next`. Setting
// CHAINADDR starts a new chain: the engine's count goes back to zero.
//
// When the engine runs. Synchronously, in the register write that gives it work (DMACOUNT,
// CHANCMD resume): by the time that write returns, every descriptor made available has
// completed or the channel has halted on an error, its completion writes are in memory and its
// interrupts have been sent. A program therefore never sees the channel ACTIVE (except with bus
// mastering off, below); polling CHANSTS finds it idle at once. This is deterministic, needs no
// thread, and costs the two cores of a small machine nothing while a program polls. A suspend
// or abort can only act between batches, which is when drivers issue them.
//
// Bus mastering. With COMMAND's bus-master enable clear the device issues no request at all:
// a channel given work stays ACTIVE with nothing fetched, moved or written, and goes on when it
// is next prompted (a DMACOUNT write, a resume, or a read of CHANSTS) with bus mastering on.
//
// Errors. A failure halts the channel (state HALTED) with its bit in CHANERR: an IOMMU fault
// (or unbacked memory) reading source data is Read Data Error, writing destination data Write
// Data Error (the two errors Linux's driver recovers from), fetching a descriptor Next
// Descriptor Address Error (Chain Address Value Error for the chain's first), a descriptor not
// 64-byte aligned Descriptor Error (again Chain Address Value Error for the first), an
// operation other than copy Descriptor Control Error, a size of zero or above 2^XFERCAP
// Descriptor Transfer Size Error, a failed completion write Completion Address Error. CHANSTS
// keeps the address of the last descriptor that completed, so software finds the failing one
// after it. With CHANCTRL's error completion enable, the halted CHANSTS is also written to
// CHANCMP; with error interrupt enable, the channel interrupts. The model halts on every error
// whatever "any error abort enable" says: none of the errors it can produce lets a descriptor
// finish. CHANERR is write-1-to-clear; a channel halted on an error takes no work until CHANERR
// is clear (a reset clears it).
//
// Interrupts. A descriptor with interrupt enable, or an error with error interrupt enable,
// raises the channel's interrupt: its ATTNSTATUS bit is set and, if the channel is armed (a
// CHANCTRL write with INT_REARM since its last interrupt), the device signals — vector n for
// channel n when INTRCTRL's MSI-X vector control is set, vector 0 (MSI or INTx) when only the
// master enable is — and the channel disarms. An interrupt raised while disarmed is held and
// sent when software re-arms.

/// Interrupts a run raised, sent after the device's lock is released.
struct IOATInterrupts {
    /// Vectors to signal, one bit per vector.
    var vectors: UInt64 = 0
}

/// One channel's registers and engine. Accessed only under the device's lock.
struct IOATChannel {
    /// The channel's index (its MSI-X vector and ATTNSTATUS bit).
    let index: Int
    /// log2 of the largest transfer a descriptor may ask for.
    let transferCapacityLog2: UInt8

    /// CHANCTRL's stored bits.
    var control: UInt16 = 0
    /// Whether an interrupt may be sent (set by INT_REARM, cleared when one is sent).
    var interruptArmed = false
    /// An interrupt raised while disarmed, sent at the next re-arm.
    var interruptHeld = false
    /// DMACOUNT as last written.
    var dmaCount: UInt16 = 0
    /// Descriptors completed since CHAINADDR was set (mod 2^16).
    var completedCount: UInt16 = 0
    /// CHAINADDR as last written.
    var chainAddress: UInt64 = 0
    /// The address of the next descriptor the engine fetches.
    var nextDescriptor: UInt64 = 0
    /// Whether the next descriptor is the chain's first (its errors are Chain Address errors).
    var atChainStart = true
    /// CHANCMP.
    var completionAddress: UInt64 = 0
    /// The last completed descriptor's address (CHANSTS bits 63:6).
    var completedDescriptor: UInt64 = 0
    /// CDAR: the descriptor being or last processed.
    var currentDescriptor: UInt64 = 0
    /// CHANSTS's state field.
    var state: IOATChannelState = .halted
    /// CHANERR.
    var error: UInt32 = 0
    /// CHANERRMSK.
    var errorMask: UInt32 = 0
    /// DCACTRL.
    var dcaControl: UInt32 = 0

    init(index: Int, transferCapacityLog2: UInt8) {
        self.index = index
        self.transferCapacityLog2 = transferCapacityLog2
    }

    /// CHANSTS: completed descriptor address and state.
    var status: UInt64 { completedDescriptor & IOATRegister.statusAddressMask | state.rawValue }

    /// The channel's reset: every register to its power-on value, the engine halted.
    mutating func reset() {
        self = IOATChannel(index: index, transferCapacityLog2: transferCapacityLog2)
    }

    // MARK: Register writes

    /// CHANCTRL written with `value`.
    mutating func writeControl(_ value: UInt16, intrctrl: UInt8, into interrupts: inout IOATInterrupts) {
        control = value & IOATRegister.controlWritableMask
        guard value & IOATRegister.controlInterruptRearm != 0 else { return }
        interruptArmed = true
        if interruptHeld {
            interruptHeld = false
            deliver(intrctrl: intrctrl, into: &interrupts)
        }
    }

    /// CHAINADDR written (either half or whole): a new chain starts there.
    mutating func writeChainAddress(_ value: UInt64) {
        chainAddress = value
        nextDescriptor = value
        completedCount = 0
        atChainStart = true
    }

    /// DMACOUNT written: start (or continue) unless halted on an error.
    mutating func writeDMACount(_ value: UInt16, host: (any PCIDeviceHost)?, attention: inout UInt32, intrctrl: UInt8,
                                into interrupts: inout IOATInterrupts) {
        dmaCount = value
        guard !(state == .halted && error != 0), completedCount != dmaCount else { return }
        state = .active
        run(host: host, attention: &attention, intrctrl: intrctrl, into: &interrupts)
    }

    /// CHANCMD written.
    mutating func command(_ bits: UInt8, host: (any PCIDeviceHost)?, attention: inout UInt32, intrctrl: UInt8,
                          into interrupts: inout IOATInterrupts) {
        if bits & IOATRegister.commandReset != 0 {
            reset()
            attention &= ~(1 << UInt32(index))
            return
        }
        if bits & IOATRegister.commandAbort != 0 {
            state = .halted
            return
        }
        if bits & (IOATRegister.commandStart | IOATRegister.commandAppend) != 0 {
            // The version 1 commands: this channel is driven by DMACOUNT.
            fail(IOATRegister.errorChannelCommand, host: host, attention: &attention, intrctrl: intrctrl, into: &interrupts)
            return
        }
        if bits & IOATRegister.commandSuspend != 0, state == .active || state == .idle {
            state = .suspended
        }
        if bits & IOATRegister.commandResume != 0, state == .suspended {
            state = .active
            run(host: host, attention: &attention, intrctrl: intrctrl, into: &interrupts)
        }
    }

    /// CHANSTS read: a channel held up by bus mastering goes on if it now may.
    mutating func prompt(host: (any PCIDeviceHost)?, attention: inout UInt32, intrctrl: UInt8, into interrupts: inout IOATInterrupts) {
        if state == .active { run(host: host, attention: &attention, intrctrl: intrctrl, into: &interrupts) }
    }

    // MARK: The engine

    /// Processes descriptors while the channel is active and has some.
    mutating func run(host: (any PCIDeviceHost)?, attention: inout UInt32, intrctrl: UInt8, into interrupts: inout IOATInterrupts) {
        while state == .active {
            guard completedCount != dmaCount else {
                state = .idle
                return
            }
            guard let host, host.busMasterEnabled else { return }  // no requests: held, still active
            let function = host.function
            let address = nextDescriptor
            if address & UInt64(IOATDescriptor.size - 1) != 0 {
                fail(atChainStart ? IOATRegister.errorChainAddressValue : IOATRegister.errorNextDescriptorAlignment,
                     host: host, attention: &attention, intrctrl: intrctrl, into: &interrupts)
                return
            }
            currentDescriptor = address
            let fetched: IOATDescriptor? = withUnsafeTemporaryAllocation(byteCount: IOATDescriptor.size, alignment: 8) { image in
                guard case .success = function.read(address: address, into: image) else { return nil }
                return IOATDescriptor(UnsafeRawBufferPointer(image))
            }
            guard let descriptor = fetched else {
                fail(atChainStart ? IOATRegister.errorChainAddressValue : IOATRegister.errorNextDescriptorAddress,
                     host: host, attention: &attention, intrctrl: intrctrl, into: &interrupts)
                return
            }
            if let bit = perform(descriptor, function) {
                fail(bit, host: host, attention: &attention, intrctrl: intrctrl, into: &interrupts)
                return
            }
            completedDescriptor = address
            completedCount &+= 1
            nextDescriptor = descriptor.next
            atChainStart = false
            if descriptor.writesCompletion {
                let more: IOATChannelState = completedCount == dmaCount ? .idle : .active
                if !writeCompletion(completedDescriptor & IOATRegister.statusAddressMask | more.rawValue, function) {
                    fail(IOATRegister.errorCompletionAddress, host: host, attention: &attention, intrctrl: intrctrl, into: &interrupts)
                    return
                }
            }
            if descriptor.interrupts { raise(attention: &attention, intrctrl: intrctrl, into: &interrupts) }
        }
    }

    /// Carries out one descriptor; the CHANERR bit of its failure, or nil.
    private func perform(_ descriptor: IOATDescriptor, _ function: PCIFunction) -> UInt32? {
        guard descriptor.operation == IOATDescriptor.copyOperation else { return IOATRegister.errorDescriptorControl }
        let size = descriptor.transferSize
        guard size != 0, UInt64(size) <= UInt64(1) << transferCapacityLog2 else { return IOATRegister.errorTransferSize }
        if descriptor.isNull { return nil }
        switch function.copy(from: descriptor.source, to: descriptor.destination, count: Int(size)) {
        case .success: return nil
        case .failure(.read): return IOATRegister.errorReadData
        case .failure(.write): return IOATRegister.errorWriteData
        }
    }

    /// Writes `value` (a CHANSTS image) to CHANCMP; whether it landed.
    private func writeCompletion(_ value: UInt64, _ function: PCIFunction) -> Bool {
        let address = completionAddress
        return withUnsafeBytes(of: value.littleEndian) { bytes in
            if case .success = function.write(address: address, from: bytes) { return true }
            return false
        }
    }

    /// Halts the channel with `bit` in CHANERR; error completion and interrupt as CHANCTRL says.
    private mutating func fail(_ bit: UInt32, host: (any PCIDeviceHost)?, attention: inout UInt32, intrctrl: UInt8,
                               into interrupts: inout IOATInterrupts) {
        error |= bit
        state = .halted
        if control & IOATRegister.controlErrorCompletionEnable != 0, let host, host.busMasterEnabled,
           !writeCompletion(status, host.function) {
            error |= IOATRegister.errorCompletionAddress
        }
        if control & IOATRegister.controlErrorInterruptEnable != 0 {
            raise(attention: &attention, intrctrl: intrctrl, into: &interrupts)
        }
    }

    /// Raises the channel's interrupt (see the file comment).
    private mutating func raise(attention: inout UInt32, intrctrl: UInt8, into interrupts: inout IOATInterrupts) {
        attention |= 1 << UInt32(index)
        if interruptArmed { deliver(intrctrl: intrctrl, into: &interrupts) } else { interruptHeld = true }
    }

    /// Sends the channel's interrupt as INTRCTRL routes it, and disarms.
    private mutating func deliver(intrctrl: UInt8, into interrupts: inout IOATInterrupts) {
        if intrctrl & IOATRegister.interruptMSIXVectorControl != 0 {
            interrupts.vectors |= 1 << UInt64(index)
        } else if intrctrl & IOATRegister.interruptMasterEnable != 0 {
            interrupts.vectors |= 1
        } else {
            return  // the device's interrupts are off: nothing sent, the channel stays armed
        }
        interruptArmed = false
    }
}

// MARK: Saved state

extension IOATChannel {
    /// Appends the channel's registers and engine state (IOATDevice's saved state, version 1):
    /// CHANCTRL u16, armed u8, held u8, DMACOUNT u16, completed count u16, CHAINADDR, next
    /// descriptor, at-chain-start u8, CHANCMP, completed descriptor, CDAR (u64 each but the
    /// flag), state u8, CHANERR, CHANERRMSK, DCACTRL (u32 each).
    func save(into w: inout DeviceStateWriter) {
        w.append(control)
        w.append(interruptArmed)
        w.append(interruptHeld)
        w.append(dmaCount)
        w.append(completedCount)
        w.append(chainAddress)
        w.append(nextDescriptor)
        w.append(atChainStart)
        w.append(completionAddress)
        w.append(completedDescriptor)
        w.append(currentDescriptor)
        w.append(UInt8(state.rawValue))
        w.append(error)
        w.append(errorMask)
        w.append(dcaControl)
    }

    /// Reads what `save` wrote; false (self unchanged in part) on a short or invalid state.
    mutating func restore(from r: inout DeviceStateReader) -> Bool {
        guard let control: UInt16 = r.read(), let armed = r.readBool(), let held = r.readBool(),
              let dmaCount: UInt16 = r.read(), let completedCount: UInt16 = r.read(),
              let chainAddress: UInt64 = r.read(), let nextDescriptor: UInt64 = r.read(), let atChainStart = r.readBool(),
              let completionAddress: UInt64 = r.read(), let completedDescriptor: UInt64 = r.read(),
              let currentDescriptor: UInt64 = r.read(), let stateValue: UInt8 = r.read(),
              let state = IOATChannelState(rawValue: UInt64(stateValue)),
              let error: UInt32 = r.read(), let errorMask: UInt32 = r.read(), let dcaControl: UInt32 = r.read() else { return false }
        self.control = control & IOATRegister.controlWritableMask
        interruptArmed = armed
        interruptHeld = held
        self.dmaCount = dmaCount
        self.completedCount = completedCount
        self.chainAddress = chainAddress
        self.nextDescriptor = nextDescriptor
        self.atChainStart = atChainStart
        self.completionAddress = completionAddress
        self.completedDescriptor = completedDescriptor
        self.currentDescriptor = currentDescriptor
        self.state = state
        self.error = error
        self.errorMask = errorMask
        self.dcaControl = dcaControl
        return true
    }
}
