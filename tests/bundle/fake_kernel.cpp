// A stand-in kernel source the fake target asks bundles to ship (device_assets).
extern "C" int fake_kernel(int x) { return x + 1; }
