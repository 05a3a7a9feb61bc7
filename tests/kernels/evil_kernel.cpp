// A library that must never be loaded: its constructor runs at dlopen and writes the file $EDGEKIT_TEST_MARKER names.
#include <cstdio>
#include <cstdlib>

__attribute__((constructor)) static void edgekit_test_mark_loaded() {
  const char* path = std::getenv("EDGEKIT_TEST_MARKER");
  if (path == nullptr) return;
  if (FILE* f = std::fopen(path, "w")) {
    std::fputs("loaded\n", f);
    std::fclose(f);
  }
}
