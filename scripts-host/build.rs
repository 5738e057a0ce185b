//! Build script for the scripts host: adds an rpath for the libpython that pyo3 linked against, so the worker
//! loads that same libpython at run time.

fn main() {
    // pyo3 links the libpython of the python3 on PATH but writes no rpath, so
    // without this the binary could load another libpython at run time.
    pyo3_build_config::add_libpython_rpath_link_args();
}
