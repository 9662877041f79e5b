# Installs a nosa build tree into a fresh prefix and checks what landed there. Run by the CTest
# fixture consumer.install (tests/CMakeLists.txt) before consumer.find_package:
#
#   cmake -DBUILD_DIR=<build> -DPREFIX=<prefix> -DSOURCE_DIR=<nosa source> [-DCONFIG=<cfg>]
#         -P cmake/nosaInstallCheck.cmake

foreach(var BUILD_DIR PREFIX SOURCE_DIR)
    if(NOT DEFINED ${var})
        message(FATAL_ERROR "nosaInstallCheck.cmake: -D${var}=... is required")
    endif()
endforeach()

# A fresh prefix each time, so a header deleted from the source tree cannot linger in it.
file(REMOVE_RECURSE "${PREFIX}")

set(config_args "")
if(CONFIG)
    set(config_args --config "${CONFIG}")
endif()
execute_process(
    COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" ${config_args}
    RESULT_VARIABLE result)
if(NOT result EQUAL 0)
    message(FATAL_ERROR "cmake --install ${BUILD_DIR} --prefix ${PREFIX} failed: ${result}")
endif()

# Every public header must be installed...
file(GLOB_RECURSE headers RELATIVE "${SOURCE_DIR}/include"
    "${SOURCE_DIR}/include/*.h" "${SOURCE_DIR}/include/*.cuh")
set(missing "")
foreach(header IN LISTS headers)
    if(NOT EXISTS "${PREFIX}/include/${header}")
        list(APPEND missing "include/${header}")
    endif()
endforeach()

# ...together with the package files.
foreach(file nosaConfig.cmake nosaConfigVersion.cmake nosaTargets.cmake)
    file(GLOB_RECURSE found "${PREFIX}/*/${file}")
    if(NOT found)
        list(APPEND missing "${file}")
    endif()
endforeach()

if(missing)
    list(JOIN missing "\n  " missing)
    message(FATAL_ERROR "not installed into ${PREFIX}:\n  ${missing}")
endif()
list(LENGTH headers count)
message(STATUS "nosa installed into ${PREFIX}: ${count} headers and the CMake package")
