// The register map of an Intel I/OAT (QuickData / Crystal Beach DMA) engine of version 3.x, as
// the Skylake-SP CBDMA function (8086:2021) presents it in BAR 0.
//
// BAR 0 (16 KiB): the general registers at 0x00–0x7f, channel n's registers at 0x80 * (n + 1)
// (one channel per function on this part, so 0x80–0xff), the MSI-X table at 0x2000 and the
// pending-bit array at 0x3000 (the machine's, never the model's). Offsets and bits are those
// Intel documents for CB 3.x and that Linux's ioatdma driver and the VFIO selftests' driver use.

/// Offsets and bits of the I/OAT registers.
public enum IOATRegister {
    /// The size of BAR 0.
    public static let barSize: UInt64 = 0x4000
    /// The offset of the MSI-X table in BAR 0.
    public static let msixTableOffset: UInt32 = 0x2000
    /// The offset of the MSI-X pending-bit array in BAR 0.
    public static let msixPBAOffset: UInt32 = 0x3000
    /// The size of each channel's register block; channel n starts at `channelSize * (n + 1)`.
    public static let channelSize: UInt64 = 0x80

    // MARK: General registers (offsets from BAR 0)

    /// CHANCNT (8-bit, RO): number of channels, bits 4:0.
    public static let channelCount: UInt64 = 0x00
    /// XFERCAP (8-bit, RO): log2 of the largest transfer one descriptor may ask for, bits 4:0.
    public static let transferCapacity: UInt64 = 0x01
    /// GENCTRL (8-bit): general control (bit 0: debug enable).
    public static let generalControl: UInt64 = 0x02
    /// INTRCTRL (8-bit): interrupt control.
    public static let interruptControl: UInt64 = 0x03
    /// ATTNSTATUS (32-bit, RO, cleared by reading): one bit per channel with an interrupt pending.
    public static let attentionStatus: UInt64 = 0x04
    /// CBVER (8-bit, RO): version, major in bits 7:4, minor in bits 3:0.
    public static let version: UInt64 = 0x08
    /// PERPORTOFFSET (16-bit, RO).
    public static let perPortOffset: UInt64 = 0x0A
    /// INTRDELAY (16-bit): interrupt coalescing delay (bits 13:0); bit 15 (RO) coalescing supported.
    public static let interruptDelay: UInt64 = 0x0C
    /// CS_STATUS (16-bit, RO): device status.
    public static let deviceStatus: UInt64 = 0x0E
    /// DMACAPABILITY (32-bit, RO).
    public static let dmaCapability: UInt64 = 0x10
    /// DCAOFFSET (16-bit, RO): offset of the DCA registers; 0 when there are none.
    public static let dcaOffset: UInt64 = 0x14
    /// CHWPREFLMT (8-bit): descriptor prefetch limit (descriptor prefetch parts only).
    public static let prefetchLimit: UInt64 = 0x4C

    // INTRCTRL bits.
    /// Master interrupt enable (the single-vector modes: MSI, INTx).
    public static let interruptMasterEnable: UInt8 = 0x01
    /// Read only: some channel has an interrupt pending (ATTNSTATUS is not zero).
    public static let interruptStatus: UInt8 = 0x02
    /// Read only: interrupt status and master enable.
    public static let interruptActive: UInt8 = 0x04
    /// Per-channel MSI-X vectors enabled (channel n signals vector n).
    public static let interruptMSIXVectorControl: UInt8 = 0x08

    /// INTRDELAY's delay field.
    public static let interruptDelayMask: UInt16 = 0x3FFF

    // MARK: Channel registers (offsets from the channel's block)

    /// CHANCTRL (16-bit): channel control.
    public static let channelControl: UInt64 = 0x00
    /// CHANCMPTBL / DMA_COMP (16-bit, RO): compatibility with version 2 of the channel interface.
    public static let channelCompatibility: UInt64 = 0x02
    /// CHANCMD (8-bit): channel command.
    public static let channelCommand: UInt64 = 0x04
    /// DMACOUNT (16-bit): descriptors made available since the chain address was set (mod 2^16).
    public static let dmaCount: UInt64 = 0x06
    /// CHANSTS (64-bit, RO): completed descriptor address (bits 63:6) and status (bits 2:0).
    public static let channelStatus: UInt64 = 0x08
    /// CHAINADDR (64-bit): address of the first descriptor of the chain.
    public static let chainAddress: UInt64 = 0x10
    /// CHANCMP (64-bit): where completion writes (copies of CHANSTS) go.
    public static let completionAddress: UInt64 = 0x18
    /// CDAR (64-bit, RO): address of the descriptor being (or last) processed.
    public static let currentDescriptorAddress: UInt64 = 0x20
    /// CHANERR (32-bit, write 1 to clear): channel errors.
    public static let channelError: UInt64 = 0x28
    /// CHANERRMSK (32-bit): channel error mask.
    public static let channelErrorMask: UInt64 = 0x2C
    /// DCACTRL (32-bit): DCA control (target CPU of completion writes).
    public static let dcaControl: UInt64 = 0x30

    // CHANCTRL bits.
    /// Write 1 to arm the channel's interrupt (it disarms when it fires).
    public static let controlInterruptRearm: UInt16 = 0x0001
    /// Write a completion (CHANSTS) to CHANCMP when the channel halts on an error.
    public static let controlErrorCompletionEnable: UInt16 = 0x0004
    /// Abort (halt) on any error.
    public static let controlAnyErrorAbortEnable: UInt16 = 0x0008
    /// Interrupt when the channel halts on an error.
    public static let controlErrorInterruptEnable: UInt16 = 0x0010
    /// Snoop control of descriptor reads.
    public static let controlDescriptorAddressSnoop: UInt16 = 0x0020
    /// Channel in use (a semaphore for software; read returns it set once set).
    public static let controlChannelInUse: UInt16 = 0x0100
    /// DCA of completion writes.
    public static let controlCompletionDCAEnable: UInt16 = 0x0200
    /// The bits of CHANCTRL that hold a value (priority 15:12 and the bits above).
    public static let controlWritableMask: UInt16 = 0xF33C

    /// Compatibility value: version 2 of the channel interface (DMACOUNT-driven).
    public static let compatibilityV2: UInt16 = 0x0002

    // CHANCMD bits.
    /// Start (version 1; not used from version 2 on).
    public static let commandStart: UInt8 = 0x01
    /// Append (version 1; not used from version 2 on).
    public static let commandAppend: UInt8 = 0x02
    /// Suspend the channel after the descriptor in progress.
    public static let commandSuspend: UInt8 = 0x04
    /// Abort: stop the channel at once.
    public static let commandAbort: UInt8 = 0x08
    /// Resume a suspended channel.
    public static let commandResume: UInt8 = 0x10
    /// Reset the channel (reads back set until the reset is done).
    public static let commandReset: UInt8 = 0x20

    // CHANSTS fields.
    /// The completed descriptor address (64-byte aligned).
    public static let statusAddressMask: UInt64 = ~0x3F
    /// The channel state field.
    public static let statusStateMask: UInt64 = 0x7

    // CHANERR bits.
    /// DMA transfer source address error.
    public static let errorSourceAddress: UInt32 = 0x0001
    /// DMA transfer destination address error.
    public static let errorDestinationAddress: UInt32 = 0x0002
    /// Next descriptor address error (the next descriptor could not be read).
    public static let errorNextDescriptorAddress: UInt32 = 0x0004
    /// Descriptor error (the next descriptor address is not 64-byte aligned).
    public static let errorNextDescriptorAlignment: UInt32 = 0x0008
    /// Chain address value error (CHAINADDR unaligned, or its descriptor could not be read).
    public static let errorChainAddressValue: UInt32 = 0x0010
    /// CHANCMD error (a command the channel does not take).
    public static let errorChannelCommand: UInt32 = 0x0020
    /// Read data error: a read of source data failed (for example an IOMMU fault).
    public static let errorReadData: UInt32 = 0x0100
    /// Write data error: a write of destination data failed (for example an IOMMU fault).
    public static let errorWriteData: UInt32 = 0x0200
    /// Descriptor control error (an operation the channel does not perform).
    public static let errorDescriptorControl: UInt32 = 0x0400
    /// Descriptor transfer size error (zero, or more than 2^XFERCAP).
    public static let errorTransferSize: UInt32 = 0x0800
    /// Completion address error (the completion write failed).
    public static let errorCompletionAddress: UInt32 = 0x1000
    /// Descriptor count error.
    public static let errorDescriptorCount: UInt32 = 0x40000
}

/// The state field of CHANSTS.
public enum IOATChannelState: UInt64, Hashable, Sendable {
    /// Processing descriptors (or, with bus mastering off, holding descriptors it cannot fetch).
    case active = 0
    /// Idle: every descriptor DMACOUNT made available has completed ("done").
    case idle = 1
    /// Suspended by CHANCMD.
    case suspended = 2
    /// Halted: after reset or abort, or on an error (CHANERR says which).
    case halted = 3
}
