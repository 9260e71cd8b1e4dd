// SPDX-License-Identifier: MIT
// File utilities shared by every reader and writer in io/: a read-only memory map (MappedFile), atomic writes
// (temporary file in the same folder + fsync + rename) and whole-file text reads. POSIX only.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <ostream>
#include <streambuf>
#include <string>
#include <utility>
#include <vector>

#include "prefixtune/core/error.hpp"

namespace prefixtune {

namespace detail {

/// strerror(err) as a std::string.
inline std::string errno_text(int err) { return std::strerror(err); }

/// A std::streambuf writing to a POSIX file descriptor through a 64 KiB buffer. It remembers the first errno
/// a write() hit; once failed, every later write fails too, so the ostream goes bad and stays bad.
class FdStreamBuf : public std::streambuf {
 public:
  explicit FdStreamBuf(int fd) : fd_(fd), buf_(std::size_t{1} << 16) { reset_put_area(); }
  FdStreamBuf(const FdStreamBuf&) = delete;
  FdStreamBuf& operator=(const FdStreamBuf&) = delete;

  /// The errno of the first failed write, 0 if none failed.
  int error() const { return error_; }

 protected:
  int_type overflow(int_type ch) override {
    if (!flush_buffer()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }

  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n <= epptr() - pptr()) {
      std::memcpy(pptr(), s, static_cast<std::size_t>(n));
      pbump(static_cast<int>(n));
      return n;
    }
    if (!flush_buffer() || !write_all(s, static_cast<std::size_t>(n))) return 0;
    return n;
  }

  int sync() override { return flush_buffer() ? 0 : -1; }

 private:
  void reset_put_area() { setp(buf_.data(), buf_.data() + buf_.size()); }

  bool flush_buffer() {
    const bool ok = write_all(pbase(), static_cast<std::size_t>(pptr() - pbase()));
    reset_put_area();
    return ok;
  }

  bool write_all(const char* p, std::size_t n) {
    if (error_ != 0) return false;
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
        return false;
      }
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  int fd_;
  std::vector<char> buf_;
  int error_ = 0;
};

/// A process-wide counter that makes temporary file names unique between threads.
inline unsigned next_temp_file_id() {
  static std::atomic<unsigned> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

/// fsync on the folder holding path, so that a rename inside it is durable. Best effort: errors are ignored.
inline void fsync_parent_dir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace detail

/// A whole file mapped read-only into memory (RAII; movable, not copyable). An empty file maps to
/// data() == nullptr, size() == 0. The bytes stay valid while the object lives.
class MappedFile {
 public:
  MappedFile() = default;

  /// Maps path; throws Error naming the path and the system's reason (missing file, a folder, no permission).
  explicit MappedFile(const std::string& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    PREFIXTUNE_CHECK(fd >= 0, "cannot open '", path, "': ", detail::errno_text(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      PREFIXTUNE_FAIL("cannot stat '", path, "': ", detail::errno_text(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      PREFIXTUNE_FAIL("cannot map '", path,
                      "': ", S_ISDIR(st.st_mode) ? detail::errno_text(EISDIR) : "not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        PREFIXTUNE_FAIL("cannot map '", path, "' (", size_, " bytes): ", detail::errno_text(err));
      }
      data_ = static_cast<const std::uint8_t*>(p);
    }
    ::close(fd);  // the mapping keeps the file alive
  }

  ~MappedFile() { unmap(); }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept
      : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      unmap();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void unmap() noexcept {
    if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Writes path atomically: writer streams the contents into a temporary file in the same folder
/// (path + ".tmp.<pid>.<n>"), which is flushed, fsync'ed and renamed over path. On any failure (including an
/// exception from writer) the temporary file is removed, path keeps its old contents, and Error naming path is
/// thrown (exceptions that are not std::exception propagate unchanged after the clean-up).
inline void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer) {
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(detail::next_temp_file_id());
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  PREFIXTUNE_CHECK(fd >= 0, "cannot write '", path, "': cannot create temporary file '", tmp,
                   "': ", detail::errno_text(errno));
  try {
    {
      detail::FdStreamBuf buf(fd);
      std::ostream os(&buf);
      try {
        writer(os);
      } catch (const Error& e) {
        PREFIXTUNE_FAIL("writing '", path, "' failed: ", e.what());
      } catch (const std::exception& e) {
        PREFIXTUNE_FAIL("writing '", path, "' failed: ", e.what());
      }
      os.flush();
      PREFIXTUNE_CHECK(os.good(), "writing '", path,
                       "' failed: ", detail::errno_text(buf.error() != 0 ? buf.error() : EIO));
    }
    PREFIXTUNE_CHECK(::fsync(fd) == 0, "writing '", path, "' failed: fsync: ", detail::errno_text(errno));
    const int rc = ::close(fd);
    fd = -1;
    PREFIXTUNE_CHECK(rc == 0, "writing '", path, "' failed: close: ", detail::errno_text(errno));
    PREFIXTUNE_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "cannot write '", path, "': renaming '", tmp,
                     "' over it failed: ", detail::errno_text(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  detail::fsync_parent_dir(path);
}

/// Removes the temporary files "<path>.tmp.<pid>.<n>" that write_file_atomic left behind when its process was killed
/// (SIGKILL, power loss) before the rename; files of processes still running are left alone. Returns how many.
inline std::size_t remove_stale_temp_files(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const std::string stem = p.filename().string() + ".tmp.";
  std::error_code ec;
  std::size_t removed = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, stem.size(), stem) != 0) continue;
    const std::size_t dot = name.find('.', stem.size());
    if (dot == std::string::npos || dot == stem.size()) continue;
    long pid = 0;
    const auto [end_ptr, err] = std::from_chars(name.data() + stem.size(), name.data() + dot, pid);
    if (err != std::errc() || end_ptr != name.data() + dot || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == -1 && errno == ESRCH) {
      std::error_code rm;
      removed += fs::remove(it->path(), rm) ? 1 : 0;
    }
  }
  return removed;
}

/// Writes text to path atomically (see write_file_atomic).
inline void write_text_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&](std::ostream& os) { os.write(text.data(), static_cast<std::streamsize>(text.size())); });
}

/// The whole contents of a (small) file, e.g. a JSON config; throws Error naming the path and the reason.
inline std::string read_text_file(const std::string& path) {
  const MappedFile f(path);
  if (f.size() == 0) return {};
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

}  // namespace prefixtune
