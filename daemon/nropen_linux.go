package daemon

// nrOpenPath holds the kernel's ceiling for any open-file limit.
const nrOpenPath = "/proc/sys/fs/nr_open"
