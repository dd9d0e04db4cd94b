print("ioasid")
