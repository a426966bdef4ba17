# How gptj_ggml finds ggml. Two ways, one result: the targets ggml::ggml, ggml::ggml-base
# and ggml::ggml-cpu, and GPTJ_GGML_RPATH (where the installed extension looks for ggml's
# shared libraries).
#
# 1. Default: the prebuilt libraries of the PyPI package libggml-python (pinned in VERSION).
#    scikit-build-core puts the package on CMAKE_PREFIX_PATH through its cmake.prefix entry
#    point. The package installs its config under lib64/cmake (lib/cmake when it is built
#    from source), which Debian's CMake does not search by itself, hence PATH_SUFFIXES.
# 2. -DGPTJ_GGML_SOURCE_DIR=/path/to/ggml: build ggml from a source tree into the extension
#    (static), e.g. with -DGGML_NATIVE=ON -DGGML_LLAMAFILE=ON or a GPU backend.

set(GPTJ_GGML_VERSION 0.20.2)
set(GPTJ_GGML_SOURCE_DIR "" CACHE PATH "Build against this ggml source tree instead of libggml-python")

if(GPTJ_GGML_SOURCE_DIR)
    if(NOT EXISTS "${GPTJ_GGML_SOURCE_DIR}/CMakeLists.txt")
        message(FATAL_ERROR "GPTJ_GGML_SOURCE_DIR=${GPTJ_GGML_SOURCE_DIR} is not a ggml source tree")
    endif()
    set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
    set(CMAKE_POSITION_INDEPENDENT_CODE ON)
    set(GGML_BUILD_TESTS OFF CACHE BOOL "" FORCE)
    set(GGML_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
    add_subdirectory("${GPTJ_GGML_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/ggml" EXCLUDE_FROM_ALL)
    foreach(target ggml ggml-base ggml-cpu)
        if(NOT TARGET ggml::${target})
            add_library(ggml::${target} ALIAS ${target})
        endif()
    endforeach()
    set(GPTJ_GGML_RPATH "")
    message(STATUS "gptj_ggml: ggml from source tree ${GPTJ_GGML_SOURCE_DIR}")
else()
    find_package(ggml ${GPTJ_GGML_VERSION} EXACT CONFIG REQUIRED
                 PATH_SUFFIXES lib64/cmake/ggml lib/cmake/ggml)
    # The installed extension lives in site-packages/gptj_ggml/, the libraries in
    # site-packages/libggml/lib64 (prebuilt wheel) or libggml/lib (built from the sdist).
    # ggml's exported targets carry an rpath to libggml/lib only, so set both ourselves.
    set(GPTJ_GGML_RPATH "$ORIGIN/../libggml/lib64;$ORIGIN/../libggml/lib")
    message(STATUS "gptj_ggml: ggml ${ggml_VERSION} from ${ggml_DIR}")
endif()
