// pgjdbc through a Postern tunnel, for tests/tests/clients.rs.
//
// Usage: java -cp /usr/share/java/postgresql.jar Client.java PORT
// (single-file launch). Cancels the running statement with
// Statement.cancel() from another thread once a line arrives on stdin.
//
// Prints one JSON object per line, as tests/clients/python/psycopg_client.py
// does (the values printed need no JSON escaping beyond quotes and
// backslashes).

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class Client {
    static void say(String json) {
        System.out.println(json);
        System.out.flush();
    }

    static String quote(String s) {
        return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public static void main(String[] args) throws Exception {
        // Any user name and no password: the tunnel decides who we are upstream.
        Properties props = new Properties();
        props.setProperty("user", "whoever");
        props.setProperty("sslmode", "disable");
        props.setProperty("connectTimeout", "10");
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/app";
        try (Connection conn = DriverManager.getConnection(url, props)) {
            try (Statement st = conn.createStatement();
                    ResultSet rs = st.executeQuery("select current_user, count(*) from items")) {
                rs.next();
                say("{\"step\":\"query\",\"user\":" + quote(rs.getString(1)) + ",\"count\":" + rs.getLong(2) + "}");
            }

            Statement sleeping = conn.createStatement();
            String[] outcome = {"\"error\":\"the statement was not cancelled\""};
            Thread worker = new Thread(() -> {
                try {
                    sleeping.execute("select pg_sleep(30)");
                } catch (SQLException e) {
                    outcome[0] = "\"sqlstate\":" + quote(e.getSQLState()) + ",\"message\":" + quote(e.getMessage());
                }
            });
            worker.start();
            say("{\"step\":\"sleeping\"}");
            new BufferedReader(new InputStreamReader(System.in)).readLine();
            sleeping.cancel();
            worker.join();
            say("{\"step\":\"cancelled\"," + outcome[0] + "}");

            // The session is still usable after a cancelled statement.
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("select 1")) {
                rs.next();
                say("{\"step\":\"after\",\"value\":" + rs.getInt(1) + "}");
            }
        }
    }
}
