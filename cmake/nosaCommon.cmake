# Helpers shared by nosa's own tests, examples and benchmarks. Nothing here touches the nosa
# target: consumers never inherit these flags.

include_guard(GLOBAL)

# nosa_target_warnings(<target>)
#
# Turns on the warnings nosa's own code is held to (and -Werror with NOSA_WERROR=ON). For CUDA
# sources the host-compiler warnings are forwarded through -Xcompiler.
function(nosa_target_warnings target)
    if(MSVC)
        set(host_flags /W4)
        if(NOSA_WERROR)
            list(APPEND host_flags /WX)
        endif()
    else()
        set(host_flags -Wall -Wextra)
        if(NOSA_WERROR)
            list(APPEND host_flags -Werror)
        endif()
    endif()
    list(JOIN host_flags "," host_flags_joined)
    target_compile_options(${target} PRIVATE
        $<$<COMPILE_LANGUAGE:CXX>:${host_flags}>
        $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${host_flags_joined}>
        $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${NOSA_WERROR}>>:--Werror=all-warnings>)
endfunction()

# nosa_target_cuda(<target>)
#
# Makes <target> a CUDA-using binary: links the shared CUDA runtime (and only that one: the
# CUDA_RUNTIME_LIBRARY property stops CMake from also linking its default static cudart, since two
# runtimes in one process do not mix) and defines NOSA_WITH_CUDA=1 for its sources.
function(nosa_target_cuda target)
    set_target_properties(${target} PROPERTIES CUDA_RUNTIME_LIBRARY Shared)
    target_link_libraries(${target} PRIVATE CUDA::cudart)
    target_compile_definitions(${target} PRIVATE NOSA_WITH_CUDA=1)
endfunction()

# nosa_sources_need_cuda(<out-var> <source>...)
#
# Sets <out-var> to TRUE when any of the sources is a .cu file.
function(nosa_sources_need_cuda out_var)
    set(result FALSE)
    foreach(src IN LISTS ARGN)
        if(src MATCHES "\\.cu$")
            set(result TRUE)
        endif()
    endforeach()
    set(${out_var} ${result} PARENT_SCOPE)
endfunction()
