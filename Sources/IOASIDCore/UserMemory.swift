/// The memory of the process that uses a context: where user pointers in requests point, and
/// the pages that mappings pin. The core never makes system calls itself; the front door
/// supplies an implementation (`ProcessMemory` for the process the framework runs in).
public protocol UserMemory: AnyObject, Sendable {
    /// Checks that `[address, address+length)` is mapped and, if `writable`, writeable; this
    /// is the moment the kernel pins pages. Throws `EFAULT` otherwise.
    func pin(address: UInt64, length: UInt64, writable: Bool) throws(IOMMUError)
    /// Copies user memory at `address` into `buffer`; `EFAULT` if unreadable.
    func copyIn(from address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(IOMMUError)
    /// Copies `buffer` to user memory at `address`; `EFAULT` if unwriteable.
    func copyOut(_ buffer: UnsafeRawBufferPointer, to address: UInt64) throws(IOMMUError)
    /// Which file `fd` names and its current size (0 for a file without pages, such as an
    /// eventfd); `EBADF` for a descriptor that is not open.
    func fileInfo(fd: Int32) throws(IOMMUError) -> (identity: FileIdentity, size: UInt64)
    /// Maps `length` bytes of the file behind `fd` from `offset` (page-aligned) for the
    /// framework's own use; `EBADF` for a bad descriptor. Pages past the end of the file are
    /// mapped too (the kernel looks at a file's pages only when it pins them), as far as the
    /// address space allows: a span it cannot hold is mapped as far as the file reaches
    /// (`FileMapping.mappedLength`), since the kernel accepts such a span and refuses only the
    /// pins of pages past the end of the file.
    func mapFile(fd: Int32, offset: UInt64, length: UInt64, writable: Bool) throws(IOMMUError) -> FileMapping
    /// Releases a mapping made by `mapFile`.
    func unmapFile(_ mapping: FileMapping)
    /// What backs the page at `address`: the anonymous page itself, or a page of a file.
    func identity(of address: UInt64) throws(IOMMUError) -> PageIdentity
    /// How many pages may still be locked by this user, or nil when unlimited.
    func lockLimitPages() -> UInt64?
}

/// A file the framework mapped for itself (`IOMMU_IOAS_MAP_FILE`).
public struct FileMapping: Sendable, Hashable {
    /// Where the mapping starts in this process.
    public var base: UInt64
    /// Its length in bytes.
    public var length: UInt64
    /// Which file.
    public var file: FileIdentity
    /// The file offset of `base`.
    public var fileOffset: UInt64
    /// How many bytes from `base` are actually mapped: `length`, or less for a span larger than
    /// the address space can hold (then what lies beyond was past the end of the file; nothing
    /// is mapped at all when the span starts past it, and `base` is 0).
    public var mappedLength: UInt64
    public init(base: UInt64, length: UInt64, file: FileIdentity, fileOffset: UInt64, mappedLength: UInt64? = nil) {
        self.base = base; self.length = length; self.file = file; self.fileOffset = fileOffset
        self.mappedLength = mappedLength ?? length
    }
}

/// A file's identity (device and inode numbers).
public struct FileIdentity: Sendable, Hashable {
    public var device: UInt64
    public var inode: UInt64
    public init(device: UInt64, inode: UInt64) { self.device = device; self.inode = inode }
}

/// The physical identity of a page, as far as this process can tell it.
public enum PageIdentity: Sendable, Hashable {
    /// A page known by its address only (anonymous or private memory).
    case address(UInt64)
    /// A page of a shared file mapping.
    case file(FileIdentity, offset: UInt64)
}

extension UserMemory {
    /// Copies `bytes` to user memory at `address`.
    public func copyOut(bytes: [UInt8], to address: UInt64) throws(IOMMUError) {
        let r: Result<Void, IOMMUError> = bytes.withUnsafeBytes { b in
            do throws(IOMMUError) { try copyOut(b, to: address); return .success(()) } catch { return .failure(error) }
        }
        try r.get()
    }
}
