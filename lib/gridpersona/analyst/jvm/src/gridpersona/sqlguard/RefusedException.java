package gridpersona.sqlguard;

/** A statement the read-only SQL surface does not run; the message is the one line the user sees. */
public final class RefusedException extends RuntimeException {
    public RefusedException(String message) {
        // No stack: the line says everything; a trace would only reach logs, never the user.
        super(message, null, false, false);
    }
}
