// nosa: status codes, error messages and the exception type of the library.
//
// Every public entry point validates its arguments before it touches memory or launches work
// and reports failure through a Status that names the offending argument. Functions that
// cannot return a value (constructors) throw nosa::Error, which carries the same Status.
#pragma once

#include <nosa/config.h>

#include <stdexcept>
#include <string>
#include <utility>

NOSA_NAMESPACE_BEGIN

enum class StatusCode : int {
  kSuccess = 0,
  kInvalidArgument,   ///< a value is out of range, inconsistent with another, or null
  kNotSupported,      ///< a shape or type the library was not compiled for
  kCapacityExceeded,  ///< a pool, slot cache or reserved length is full
  kNotFound,          ///< an unknown sequence id or block
  kMisaligned,        ///< a pointer or stride does not meet the alignment a kernel needs
  kCudaError,         ///< a CUDA runtime call failed; the message carries cudaGetErrorString
  kInternal,          ///< a broken invariant inside nosa (a bug: please report it)
};

inline const char* to_string(StatusCode code) noexcept {
  switch (code) {
    case StatusCode::kSuccess: return "success";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kNotSupported: return "not supported";
    case StatusCode::kCapacityExceeded: return "capacity exceeded";
    case StatusCode::kNotFound: return "not found";
    case StatusCode::kMisaligned: return "misaligned";
    case StatusCode::kCudaError: return "CUDA error";
    case StatusCode::kInternal: return "internal error";
  }
  return "unknown status";
}

/// Result of a fallible call: a code plus a human-readable message that names the argument.
/// A default-constructed Status is success. Cheap to return on success (empty string).
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status success() { return {}; }

  bool ok() const noexcept { return code_ == StatusCode::kSuccess; }
  explicit operator bool() const noexcept { return ok(); }
  StatusCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

  /// "invalid argument: budget (3) is smaller than the forced blocks (18)"
  std::string to_string() const {
    if (ok()) return "success";
    return std::string(nosa::to_string(code_)) + ": " + message_;
  }

 private:
  StatusCode code_ = StatusCode::kSuccess;
  std::string message_;
};

/// Exception thrown by constructors and by the throwing convenience wrappers.
class Error : public std::runtime_error {
 public:
  explicit Error(Status status) : std::runtime_error(status.to_string()), status_(std::move(status)) {}
  const Status& status() const noexcept { return status_; }
  StatusCode code() const noexcept { return status_.code(); }

 private:
  Status status_;
};

inline Status invalid_argument(std::string message) {
  return {StatusCode::kInvalidArgument, std::move(message)};
}
inline Status not_supported(std::string message) {
  return {StatusCode::kNotSupported, std::move(message)};
}
inline Status capacity_exceeded(std::string message) {
  return {StatusCode::kCapacityExceeded, std::move(message)};
}
inline Status not_found(std::string message) { return {StatusCode::kNotFound, std::move(message)}; }
inline Status misaligned(std::string message) { return {StatusCode::kMisaligned, std::move(message)}; }

/// Throws nosa::Error when the status is not success.
inline void throw_if_error(const Status& status) {
  if (!status.ok()) throw Error(status);
}

NOSA_NAMESPACE_END

/// Evaluates a Status expression and returns it from the enclosing function when it failed.
/// Variadic so that template argument lists with commas need no extra parentheses.
#define NOSA_RETURN_IF_ERROR(...)                \
  do {                                           \
    ::nosa::Status nosa_status_ = (__VA_ARGS__); \
    if (!nosa_status_.ok()) return nosa_status_; \
  } while (0)
