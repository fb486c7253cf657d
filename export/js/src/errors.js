// The one error type a user can cause (bad bundle, bad option, bad input line): callers print
// its message as one line; any other error is a bug and keeps its stack trace.

/** A problem with the bundle, an option or an input line, stated in one line. */
export class BundleError extends Error {
  constructor(message) {
    super(message);
    this.name = 'BundleError';
  }
}
