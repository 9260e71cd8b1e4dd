# SPDX-License-Identifier: MIT
# Every C++ code block of the documentation, compiled (and the cheap whole programs run) by a test.
#
#   prefixtune_doc_snippets(DIR <dir> PAGES <file.md>... CXX_SOURCES <var> CUDA_SOURCES <var>
#                           RUNNER <var> RUN_NAMES <var>)
#
# Reads each page at configure time, finds its fenced code blocks (CommonMark: a line of three or more backticks or
# tildes opens a block, the info string's first word is its language, a line of at least as many of the same
# character closes it; the block's content loses the opening fence's indentation) and writes every block whose
# language is cpp, c++, cxx or cc to <dir>/<page>_L<line>.cpp and every cuda block to <dir>/<page>_L<line>.cu,
# verbatim after a #line directive (compiler messages name the page and its line) with one change: a whole program's
# `int main(` becomes `int prefixtune_doc_<page>_L<line>(`. A block is compiled as a translation unit of its own, so
# it must be real code: its own #includes, and declarations only (a function, a class, a whole program) outside
# functions. Whole C++ programs run in the test (a non-zero return fails it) unless the line just before the
# fence says why not:
#
#   <!-- snippet: compile-only (reads a GPT-2 folder) -->
#
# CUDA blocks are compiled only (the test machine may have no GPU). <dir>/doc_snippets_runner.cpp (RUNNER) holds
# one doctest case per running program; RUN_NAMES lists "page:line" of those. Every page is a configure dependency,
# so an edited page is extracted again by the next build; files of blocks that no longer exist are removed.
# A page whose fence is never closed stops the configuration.

# The fenced blocks of one page: appends "<line>|<lang>|<compile-only 0/1>|<file>" to <out_var> for each C++/CUDA
# block, writing its content to <dir>/<stem>_L<line>.<ext>.
function(_prefixtune_doc_page page dir out_var)
  file(READ "${page}" text)
  file(RELATIVE_PATH rel "${PROJECT_SOURCE_DIR}" "${page}")
  string(MAKE_C_IDENTIFIER "${rel}" stem)
  # CMake lists split at ';' and keep '[...]' together: hide both before splitting the page into lines.
  string(ASCII 1 semi)
  string(ASCII 2 lbr)
  string(ASCII 3 rbr)
  string(ASCII 4 bsl)
  string(REPLACE "\r\n" "\n" text "${text}")
  string(REPLACE ";" "${semi}" text "${text}")
  string(REPLACE "[" "${lbr}" text "${text}")
  string(REPLACE "]" "${rbr}" text "${text}")
  string(REPLACE "\\" "${bsl}" text "${text}")  # a line ending in '\' would escape the separator
  string(REPLACE "\n" ";" lines "${text}")
  set(result "${${out_var}}")
  set(n 0)
  set(in_block OFF)
  set(prev "")
  foreach(line IN LISTS lines)
    math(EXPR n "${n} + 1")
    if(NOT in_block)
      if(line MATCHES "^( *)(````*|~~~~*)(.*)$")
        set(indent "${CMAKE_MATCH_1}")
        set(fence "${CMAKE_MATCH_2}")
        set(info "${CMAKE_MATCH_3}")
        string(SUBSTRING "${fence}" 0 1 fence_char)
        # A backtick fence's info string may not hold a backtick (``` `x` ``` is inline code, not a fence).
        if(NOT (fence_char STREQUAL "`" AND info MATCHES "`"))
          set(in_block ON)
          string(LENGTH "${indent}" indent_len)
          string(STRIP "${info}" info)
          string(REGEX REPLACE "[ \t{].*$" "" lang "${info}")
          string(TOLOWER "${lang}" lang)
          set(start ${n})
          set(body "")
          set(compile_only 0)
          if(prev MATCHES "^ *<!-- *snippet: *compile-only")
            set(compile_only 1)
          endif()
        endif()
      endif()
    else()
      string(STRIP "${line}" trimmed)
      string(LENGTH "${fence}" fence_len)
      string(REPEAT "${fence_char}" ${fence_len} min_fence)
      if(trimmed MATCHES "^${min_fence}" AND trimmed MATCHES "^[${fence_char}]+$")
        set(in_block OFF)
        set(ext "")
        if(lang MATCHES "^(cpp|c\\+\\+|cxx|cc)$")
          set(ext cpp)
        elseif(lang STREQUAL "cuda")
          set(ext cu)
        endif()
        if(ext)
          math(EXPR first "${start} + 1")
          set(name "${stem}_L${start}")
          set(code "${body}")
          string(REPLACE "${semi}" ";" code "${code}")
          string(REPLACE "${lbr}" "[" code "${code}")
          string(REPLACE "${rbr}" "]" code "${code}")
          string(REPLACE "${bsl}" "\\" code "${code}")
          # A whole program: its main is renamed; it can run only when it takes no arguments.
          set(main_fn "")
          set(code "\n${code}")
          if(code MATCHES "\n[ \t]*int[ \t]+main[ \t]*\\(")
            set(main_fn "prefixtune_doc_${name}")
            if(NOT code MATCHES "\n[ \t]*int[ \t]+main[ \t]*\\([ \t]*(void)?[ \t]*\\)")
              set(compile_only 1)
            endif()
            string(REGEX REPLACE "\n([ \t]*)int[ \t]+main[ \t]*\\(" "\n\\1int ${main_fn}(" code "${code}")
          endif()
          string(SUBSTRING "${code}" 1 -1 code)
          set(file "${dir}/${name}.${ext}")
          file(WRITE "${file}.tmp"
               "// Generated from ${rel} (the ```${lang} block at line ${start}) by cmake/doc_snippets.cmake: edit "
               "the page, not this file.\n#line ${first} \"${page}\"\n${code}")
          configure_file("${file}.tmp" "${file}" COPYONLY)  # rewritten only when it changed: no needless rebuilds
          file(REMOVE "${file}.tmp")
          list(APPEND result "${start}|${ext}|${compile_only}|${main_fn}|${file}")
        endif()
      else()
        # Content lines lose up to the opening fence's indentation.
        set(stripped "${line}")
        if(indent_len GREATER 0)
          foreach(i RANGE 1 ${indent_len})
            if(stripped MATCHES "^ ")
              string(SUBSTRING "${stripped}" 1 -1 stripped)
            endif()
          endforeach()
        endif()
        string(APPEND body "${stripped}\n")
      endif()
    endif()
    set(prev "${line}")
  endforeach()
  if(in_block)
    message(FATAL_ERROR "${rel}:${start}: the code block opened here is never closed")
  endif()
  set(${out_var} "${result}" PARENT_SCOPE)
endfunction()

function(prefixtune_doc_snippets)
  cmake_parse_arguments(ARG "" "DIR;CXX_SOURCES;CUDA_SOURCES;RUNNER;RUN_NAMES" "PAGES" ${ARGN})
  file(MAKE_DIRECTORY "${ARG_DIR}")
  set(cxx "")
  set(cuda "")
  set(run_names "")
  set(decls "")
  set(cases "")
  set(written "")
  foreach(page IN LISTS ARG_PAGES)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${page}")
    file(RELATIVE_PATH rel "${PROJECT_SOURCE_DIR}" "${page}")
    set(blocks "")
    _prefixtune_doc_page("${page}" "${ARG_DIR}" blocks)
    foreach(b IN LISTS blocks)
      string(REPLACE "|" ";" f "${b}")
      list(GET f 0 line)
      list(GET f 1 ext)
      list(GET f 2 compile_only)
      list(GET f 3 main_fn)
      list(GET f 4 file)
      list(APPEND written "${file}")
      if(ext STREQUAL "cu")
        list(APPEND cuda "${file}")
      else()
        list(APPEND cxx "${file}")
        if(main_fn AND NOT compile_only)
          list(APPEND run_names "${rel}:${line}")
          string(APPEND decls "int ${main_fn}();\n")
          string(APPEND cases "TEST_CASE(\"${rel}:${line}: the program runs and returns 0\") {\n"
                              "  int status = -1;\n  CHECK_NOTHROW(status = ${main_fn}());\n  CHECK(status == 0);\n}\n")
        endif()
      endif()
    endforeach()
  endforeach()
  if(NOT cxx)
    message(FATAL_ERROR "prefixtune_doc_snippets: no ```cpp block in ${ARG_PAGES}")
  endif()
  set(runner "${ARG_DIR}/doc_snippets_runner.cpp")
  file(WRITE "${runner}.tmp" "// Generated by cmake/doc_snippets.cmake: runs every whole program of the docs that is "
                             "not marked compile-only.\n#include <doctest/doctest.h>\n\n${decls}\n${cases}")
  configure_file("${runner}.tmp" "${runner}" COPYONLY)
  file(REMOVE "${runner}.tmp")
  list(APPEND written "${runner}")
  # Files of blocks that were moved or deleted since the last configuration.
  file(GLOB old "${ARG_DIR}/*.cpp" "${ARG_DIR}/*.cu")
  foreach(f IN LISTS old)
    if(NOT f IN_LIST written)
      file(REMOVE "${f}")
    endif()
  endforeach()
  set(${ARG_CXX_SOURCES} "${cxx}" PARENT_SCOPE)
  set(${ARG_CUDA_SOURCES} "${cuda}" PARENT_SCOPE)
  set(${ARG_RUNNER} "${runner}" PARENT_SCOPE)
  set(${ARG_RUN_NAMES} "${run_names}" PARENT_SCOPE)
endfunction()
