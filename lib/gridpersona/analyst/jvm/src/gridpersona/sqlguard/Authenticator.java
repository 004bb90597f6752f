package gridpersona.sqlguard;

import javax.security.sasl.AuthenticationException;

import org.apache.hive.service.auth.PasswdAuthenticationProvider;
import org.apache.spark.SparkEnv;

/**
 * {@code hive.server2.authentication=CUSTOM} with this class: user name and password (PLAIN SASL, what
 * beeline {@code -n/-p} and BI tools' "Username and Password" send) checked against the users file named
 * by {@link Guard#USERS_FILE_CONF}.
 */
public final class Authenticator implements PasswdAuthenticationProvider {
    @Override
    public void Authenticate(String user, String password) throws AuthenticationException {
        String path = SparkEnv.get() == null ? "" : SparkEnv.get().conf().get(Guard.USERS_FILE_CONF, "");
        if (path.isEmpty() || !Users.verify(path, user, password)) {
            throw new AuthenticationException("gridpersona: wrong user name or password");
        }
    }
}
