// deploypipe shim: TVM 0.27's runtime includes "../support/bytes_io.h"; the same header ships as
// <tvm/support/bytes_io.h> in the apache-tvm-tirx wheel, which deploypipe.backends.tvm.native unpacks.
#include <tvm/support/bytes_io.h>
