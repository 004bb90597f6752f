package gridpersona.sqlguard;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.FileTime;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;

/**
 * The sql-server users file: one line per user, {@code name:role:pbkdf2_sha256$iterations$salt_b64$hash_b64}
 * (written by {@code gridpersona sql-user}). Re-read when its modification time or size changes, so users
 * added or removed take effect on the next connection.
 */
public final class Users {
    static final class Entry {
        final String role;
        final int iterations;
        final byte[] salt;
        final byte[] hash;

        Entry(String role, int iterations, byte[] salt, byte[] hash) {
            this.role = role;
            this.iterations = iterations;
            this.salt = salt;
            this.hash = hash;
        }
    }

    private static final Object LOCK = new Object();
    private static String cachedPath;
    private static FileTime cachedTime;
    private static long cachedSize = -1;
    private static Map<String, Entry> cached = Map.of();
    // Verified against for unknown users, so a wrong name costs the same time as a wrong password.
    private static final Entry DUMMY = new Entry(Guard.ROLE_ANALYST, 200_000, new byte[16], new byte[32]);

    private Users() {
    }

    static Map<String, Entry> load(String path) {
        synchronized (LOCK) {
            try {
                Path p = Paths.get(path);
                FileTime time = Files.getLastModifiedTime(p);
                long size = Files.size(p);
                if (path.equals(cachedPath) && time.equals(cachedTime) && size == cachedSize) {
                    return cached;
                }
                Map<String, Entry> users = parse(Files.readAllLines(p, StandardCharsets.UTF_8));
                cachedPath = path;
                cachedTime = time;
                cachedSize = size;
                cached = users;
                return users;
            } catch (IOException e) {
                return Map.of();  // no file: nobody can log in
            }
        }
    }

    static Map<String, Entry> parse(List<String> lines) {
        Map<String, Entry> users = new HashMap<>();
        for (String raw : lines) {
            String line = raw.trim();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String[] parts = line.split(":", 3);
            if (parts.length != 3) {
                continue;
            }
            String[] h = parts[2].split("\\$");
            if (h.length != 4 || !h[0].equals("pbkdf2_sha256")) {
                continue;
            }
            try {
                users.put(parts[0], new Entry(parts[1], Integer.parseInt(h[1]), Base64.getDecoder().decode(h[2]),
                    Base64.getDecoder().decode(h[3])));
            } catch (IllegalArgumentException e) {
                // a damaged line locks that user out; the others still work
            }
        }
        return users;
    }

    /** The user's role; with no users file (loopback development) everyone is an analyst. */
    public static String roleOf(String path, String user) {
        if (path == null || path.isEmpty() || user == null) {
            return Guard.ROLE_ANALYST;
        }
        Entry e = load(path).get(user);
        return e != null && Guard.ROLE_PII.equals(e.role) ? Guard.ROLE_PII : Guard.ROLE_ANALYST;
    }

    /** True when {@code password} matches the user's PBKDF2-SHA256 hash (constant-time comparison). */
    public static boolean verify(String path, String user, String password) {
        Entry e = user == null ? null : load(path).get(user);
        Entry against = e != null ? e : DUMMY;
        byte[] computed = pbkdf2(password == null ? "" : password, against.salt, against.iterations,
            against.hash.length * 8);
        return MessageDigest.isEqual(computed, against.hash) && e != null;
    }

    static byte[] pbkdf2(String password, byte[] salt, int iterations, int bits) {
        try {
            PBEKeySpec spec = new PBEKeySpec(password.toCharArray(), salt, iterations, bits);
            return SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(spec).getEncoded();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("PBKDF2WithHmacSHA256 unavailable: " + e.getMessage(), e);
        }
    }
}
