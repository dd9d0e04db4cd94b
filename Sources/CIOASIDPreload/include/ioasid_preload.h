void ioasid_preload_placeholder(void);
