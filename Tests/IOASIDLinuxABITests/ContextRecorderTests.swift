import IOASIDCore
import IOASIDLinuxABI
import Testing

@Suite("ContextRecorder: the calls and snapshots a report shows")
struct ContextRecorderTests {
    @Test func countsTimesAndErrorsPerRequestAndKeepsTheFullestAndFinalState() throws {
        let (file, _) = makeFile()
        let recorder = ContextRecorder(context: file.context, descriptor: 7, sequence: 1)
        file.recorder = recorder
        var alloc = iommu_ioas_alloc()
        #expect(file.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc) == 0)
        #expect(file.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc) == 0)
        var destroy = iommu_destroy()
        destroy.id = 99
        #expect(file.call(IOCTL.IOMMU_DESTROY, &destroy) == -2)  // ENOENT
        destroy.id = alloc.out_ioas_id
        #expect(file.call(IOCTL.IOMMU_DESTROY, &destroy) == 0)
        // An unknown request in the iommufd range and a bad argument pointer count too.
        #expect(file.ioctl(request: IOCTL.IOMMU_IOAS_ALLOC, argument: nil) == -14)  // EFAULT

        let rows = recorder.calls
        #expect(rows.map(\.name) == ["IOMMU_DESTROY", "IOMMU_IOAS_ALLOC"])
        let destroyRow = try #require(rows.first)
        #expect(destroyRow.count == 2)
        #expect(destroyRow.errors.map(\.name) == ["ENOENT"] && destroyRow.errors.map(\.count) == [1])
        let allocRow = rows[1]
        #expect(allocRow.count == 3)
        #expect(allocRow.errors.map(\.name) == ["EFAULT"])
        #expect(allocRow.totalNanoseconds >= allocRow.medianNanoseconds && allocRow.medianNanoseconds > 0)

        // The fullest moment had both IOAS; the live state has one.
        let fullest = try #require(recorder.fullest)
        #expect(fullest.snapshot.ioas.count == 2)
        #expect(fullest.when == "after call 2 (IOMMU_IOAS_ALLOC)")
        #expect(!recorder.isClosed)
        #expect(recorder.final?.snapshot.ioas.count == 1)
        #expect(recorder.final?.when.hasPrefix("at exit (still open)") == true)

        // Closing keeps the state as it was before the context tore it down.
        file.release()
        #expect(recorder.isClosed)
        #expect(recorder.final?.snapshot.ioas.count == 1)
        #expect(file.context.objects.isEmpty)
    }

    @Test func withoutARecorderNothingIsRecorded() {
        let (file, _) = makeFile()
        var alloc = iommu_ioas_alloc()
        #expect(file.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc) == 0)
        let late = ContextRecorder(context: file.context)
        file.recorder = late
        #expect(late.calls.isEmpty && late.fullest == nil)
        file.release()
    }
}
